"""Validating a vision-language export the way serving runs it: the engine's own preprocessing (Pillow and
numpy), vision graph and decoder, against the Hugging Face processor and PyTorch model, on fixed synthetic PNG
images.

PyTorch's side is computed once per export (`torch_references`: the processor's prompt ids, the logits of the
prompt's last position and of NEW_TOKENS greedy steps, with its key-value cache so each image is encoded once)
and every graph the export tries is compared with it (`compare_vision`), teacher-forced by PyTorch's greedy
tokens as for text models (exports/validation.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exports import errors
from exports.errors import ExportError
from exports.progress import ExportProgress
from exports.validation import NEW_TOKENS, VALIDATION_THREADS, Comparison

if TYPE_CHECKING:
    from exports.vision_loading import LoadedVision

VALIDATION_PROMPT = "Describe the image."
SYNTHETIC_IMAGES = ("gradient", "checkerboard")


def synthetic_png(kind: str, width: int = 48, height: int = 40) -> bytes:
    """A fixed image for validation and tests: a colour gradient or a checkerboard, as PNG bytes."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    if kind == "gradient":
        pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=-1)
    else:
        pixels = np.where(((x // 8 + y // 8) % 2)[..., None] == 0, [250, 30, 30], [20, 20, 230])
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class VisionReference:
    """PyTorch's view of one synthetic image: the processor's prompt ids, then the logits of the prompt's last
    position and of each greedy step after it ([NEW_TOKENS, vocab]), whose argmax are the greedy tokens."""

    image: bytes
    prompt_ids: list[int]
    logits: np.ndarray


def torch_references(loaded: LoadedVision, progress: ExportProgress) -> list[VisionReference]:
    """PyTorch's greedy run over the question about each synthetic image."""
    import torch
    from PIL import Image

    threads = torch.get_num_threads()
    torch.set_num_threads(VALIDATION_THREADS)
    references = []
    progress.start("reference", "Running PyTorch on the synthetic images", total=len(SYNTHETIC_IMAGES))
    try:
        for kind in SYNTHETIC_IMAGES:
            data = synthetic_png(kind)
            parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": VALIDATION_PROMPT}]}]
            text = loaded.processor.apply_chat_template(parts, add_generation_prompt=True)
            image = Image.open(io.BytesIO(data)).convert("RGB")
            inputs = dict(loaded.processor(text=text, images=[image], return_tensors="pt"))
            inputs.pop("token_type_ids", None)
            ids = inputs["input_ids"]
            rows = []
            with torch.inference_mode():
                output = loaded.model(**inputs, use_cache=True)
                for step in range(NEW_TOKENS):
                    logits = output.logits[0, -1].float()
                    rows.append(logits.numpy().copy())
                    if step + 1 == NEW_TOKENS:
                        break
                    token = logits.argmax().view(1, 1)
                    ids = torch.cat([ids, token], dim=1)
                    output = loaded.model(
                        input_ids=token,
                        attention_mask=torch.ones_like(ids),
                        past_key_values=output.past_key_values,
                        use_cache=True,
                    )
            references.append(VisionReference(data, inputs["input_ids"][0].tolist(), np.stack(rows)))
            progress.advance("reference")
    finally:
        torch.set_num_threads(threads)
    progress.finish("reference", f"{len(references)} images, {NEW_TOKENS} greedy steps each")
    return references


def compare_vision(folder: Path, references: list[VisionReference]) -> Comparison:
    """The engine (numpy preprocessing, vision graph, decoder) of the export in `folder` against `references`:
    the largest logit difference over every compared position, and the share of steps whose greedy token
    agrees with PyTorch's."""
    from inference.chat_model import ChatModel
    from inference.vision import ImageEmbeds

    engine = ChatModel.load(folder)
    worst, agreed, compared = 0.0, 0, 0
    try:
        assert engine.model.vision is not None
        for reference in references:
            messages = [{"role": "user", "content": VALIDATION_PROMPT, "images": [reference.image]}]
            prompt = engine._prompt(messages, {})
            if prompt.token_ids != reference.prompt_ids:
                raise ExportError(
                    errors.VALIDATION_FAILED, "the engine's prompt with an image differs from the processor's"
                )
            images = ImageEmbeds(prompt.starts, engine.model.vision.encode([reference.image]))
            state = engine.model.new_sequence()
            ours = engine.model.forward(state, prompt.token_ids, images=images)[-1]
            for step, theirs in enumerate(reference.logits):
                difference = float(np.max(np.abs(theirs - ours)))
                worst = max(worst, difference if np.isfinite(difference) else float("inf"))
                token = int(theirs.argmax())
                agreed += int(ours.argmax()) == token
                compared += 1
                if step + 1 < len(reference.logits):
                    ours = engine.model.forward(state, [token])[-1]
            state.release()
    finally:
        engine.close()
    return Comparison(worst, agreed / max(compared, 1), compared, compared)
