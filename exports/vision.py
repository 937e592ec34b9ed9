"""Vision-language exports: the vision encoder with its connector, the embedding table, and the text decoder.

The decoder goes through Optimum's export API with a custom config that feeds `inputs_embeds` with the KV
cache (exports/vision_configs.py), then the same decoding rewrites as text models (exports/optimize.py).
Optimum has no config for the vision towers of these families in this version, so the tower and its
connector are traced with torch.onnx. The export is validated the way serving runs it: the engine's own
preprocessing, encoder and decoder on fixed synthetic images, against PyTorch's processor and model.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exports import errors
from exports.architectures import VISION_MODEL_TYPES
from exports.conversion import _quiet
from exports.errors import ExportError
from exports.facts import file_entries, has_chat_template, now_iso, tool_versions
from exports.manifest import Capabilities, Manifest, Source, Validation, write_manifest
from exports.optimize import optimize_for_decoding
from exports.progress import ExportProgress
from exports.quantize import graph_bytes, is_large
from exports.sources import ResolvedSource
from exports.validation import NEW_TOKENS, VALIDATION_THREADS
from inference.image_preprocess import max_tiles_per_side
from inference.manifest import ImagePreprocessing, ImageTiling, Vision
from inference.vision import image_layout

DECODER_FILE = "model.onnx"
ENCODER_FILE = "vision_encoder.onnx"
EMBED_FILE = "embed_tokens.npy"
VALIDATION_PROMPT = "Describe the image."


def is_vision_model_type(model_type: str | None) -> bool:
    return model_type in VISION_MODEL_TYPES


@dataclass
class LoadedVision:
    model: Any  # the PyTorch vision-language model
    processor: Any
    model_type: str


def load_vision(folder: Path) -> LoadedVision:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(
            errors.NOT_A_MODEL, f"{folder}: transformers cannot load a vision-language model and processor ({exc})."
        ) from exc
    return LoadedVision(model.eval(), processor, model.config.model_type)


def vision_spec(loaded: LoadedVision) -> Vision:
    """The image's place in the prompt and its preprocessing, from the processor."""
    if loaded.model_type == "llava":
        return _llava_spec(loaded)
    return _idefics3_spec(loaded)


def _llava_spec(loaded: LoadedVision) -> Vision:
    """LLaVA: `<image>` repeated once per patch (the class token dropped by the `default` strategy), CLIP's
    shortest-edge resize and centre crop."""
    processor, image_processor, config = loaded.processor, loaded.processor.image_processor, loaded.model.config
    if config.vision_feature_select_strategy not in ("default", "full"):
        raise ExportError(
            errors.UNSUPPORTED_ARCHITECTURE,
            f"vision_feature_select_strategy {config.vision_feature_select_strategy!r} is not supported",
        )
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    tokens = patches + (1 if config.vision_feature_select_strategy == "full" else 0)
    crop = image_processor.crop_size
    if not getattr(image_processor, "do_center_crop", False) or crop["height"] != crop["width"]:
        raise ExportError(errors.UNSUPPORTED_ARCHITECTURE, "only a square centre crop is supported for LLaVA")
    return Vision(
        encoder_file=ENCODER_FILE,
        embed_file=EMBED_FILE,
        image_token=processor.image_token,
        image_token_id=int(config.image_token_index),
        tokens_per_image=tokens,
        image_prefix_ids=[],
        image_suffix_ids=[],
        preprocessing=ImagePreprocessing(
            size=int(crop["height"]),
            resample=int(image_processor.resample),
            rescale_factor=float(image_processor.rescale_factor),
            mean=[float(v) for v in image_processor.image_mean],
            std=[float(v) for v in image_processor.image_std],
            shortest_edge=int(image_processor.size["shortest_edge"]),
        ),
    )


def _idefics3_spec(loaded: LoadedVision) -> Vision:
    """Idefics3 / SmolVLM: the whole image's tokens between <fake_token_around_image><global-img> and
    <fake_token_around_image>; with image splitting, each tile's tokens before them, after its own
    <fake_token_around_image><row_r_col_c>, each row ended by a newline."""
    processor, image_processor = loaded.processor, loaded.processor.image_processor
    tokenizer = processor.tokenizer
    splitting = bool(getattr(image_processor, "do_image_splitting", False))
    size = int(image_processor.max_image_size["longest_edge"])
    config = loaded.model.config
    preprocessing = ImagePreprocessing(
        size=size,
        resample=int(image_processor.resample),
        rescale_factor=float(image_processor.rescale_factor),
        mean=[float(v) for v in image_processor.image_mean],
        std=[float(v) for v in image_processor.image_std],
        longest_edge=int(image_processor.size["longest_edge"]),
        do_image_splitting=splitting,
    )
    spec = Vision(
        encoder_file=ENCODER_FILE,
        embed_file=EMBED_FILE,
        image_token=processor.image_token,
        image_token_id=int(config.image_token_id),
        tokens_per_image=int(processor.image_seq_len),
        image_prefix_ids=[
            tokenizer.convert_tokens_to_ids(processor.fake_image_token),
            tokenizer.convert_tokens_to_ids(processor.global_image_tag),
        ],
        image_suffix_ids=[tokenizer.convert_tokens_to_ids(processor.fake_image_token)],
        preprocessing=preprocessing,
        tiling=_idefics3_tiling(processor, max_tiles_per_side(preprocessing)) if splitting else None,
    )
    _check_idefics3_layout(processor, spec)
    return spec


def _idefics3_tiling(processor: Any, side: int) -> ImageTiling:
    """The ids of the processor's text around the tiles, for grids up to `side` x `side`."""

    def ids(text: str) -> list[int]:
        return list(processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    fake = processor.fake_image_token
    return ImageTiling(
        tile_prefix_ids=[[ids(f"{fake}<row_{r + 1}_col_{c + 1}>") for c in range(side)] for r in range(side)],
        row_end_ids=ids("\n"),
        last_row_end_ids=ids("\n\n"),
    )


def _check_idefics3_layout(processor: Any, spec: Vision) -> None:
    """Every grid the engine can lay out gives the ids of the processor's own text for it: the tokenizer
    splits that text at its special tokens, which the recorded pieces assume."""
    from transformers.models.idefics3.processing_idefics3 import get_image_prompt_string

    side = max_tiles_per_side(spec.preprocessing) if spec.tiling is not None else 0
    grids = [(0, 0)] + [(rows, cols) for rows in range(1, side + 1) for cols in range(1, side + 1)]
    for rows, cols in grids:
        text = get_image_prompt_string(
            rows,
            cols,
            spec.tokens_per_image,
            fake_token_around_image=processor.fake_image_token,
            image_token=processor.image_token,
            global_img_token=processor.global_image_tag,
        )
        if processor.tokenizer(text, add_special_tokens=False)["input_ids"] != image_layout(spec, (rows, cols))[0]:
            raise ExportError(
                errors.UNSUPPORTED_ARCHITECTURE,
                f"the tokenizer does not split the processor's image text ({rows}x{cols} tiles) at its image "
                "tokens, so the engine cannot lay out the image as the processor does",
            )


def export_vision(
    resolved: ResolvedSource, alias: str, staging: Path, progress: ExportProgress, started: float, max_logit_diff: float
) -> Manifest:
    """Load, convert, validate and describe the vision-language model at `resolved` inside `staging`."""
    assert resolved.path is not None
    progress.start("load", "Loading the PyTorch vision-language model and its processor")
    loaded = load_vision(resolved.path)
    progress.finish("load", f"{loaded.model_type}, {_parameters(loaded.model) / 1e6:.1f}M parameters")
    spec = vision_spec(loaded)
    text_config = loaded.model.config.text_config
    eos_ids = _eos_ids(loaded)

    progress.start("convert", "Exporting the decoder (inputs_embeds, past key values) with Optimum")
    decoder = _export_decoder(loaded, staging, eos_ids)
    steps = optimize_for_decoding(decoder, text_config, large=is_large(decoder), pack=True)
    progress.finish("convert", f"{decoder.name}, {graph_bytes(decoder) / 1e6:.1f} MB; {', '.join(steps)}")

    progress.start("convert-vision", "Exporting the vision encoder and connector, and the embedding table")
    _export_encoder(loaded, staging / ENCODER_FILE, spec.preprocessing.size)
    np.save(staging / EMBED_FILE, _text_model(loaded).get_input_embeddings().weight.detach().float().numpy())
    progress.finish("convert-vision", ENCODER_FILE)

    manifest = Manifest(
        alias=alias,
        source=Source(resolved.kind, resolved.value, resolved.sha256),
        architecture=str((loaded.model.config.architectures or [type(loaded.model).__name__])[0]),
        model_type=loaded.model_type,
        parameter_count=_parameters(loaded.model),
        context_length=int(getattr(text_config, "max_position_embeddings", 2048)),
        eos_token_ids=eos_ids,
        chat_template=has_chat_template(staging),
        capabilities=Capabilities(text=True, vision=True),
        quantization="none",
        onnx_file=DECODER_FILE,
        files=[],
        validation=Validation(prompts=0, max_abs_logit_diff=0.0, max_logit_diff_threshold=max_logit_diff, passed=False),
        versions=tool_versions(),
        created_at=now_iso(),
        graph_rewrites=list(steps),
        vision=spec,
    )
    write_manifest(staging, manifest)  # the engine reads it to validate; rewritten with the figures below

    progress.start("validate", "Validating the engine against PyTorch on synthetic images")
    diff, agreement, compared = validate_vision(loaded, staging)
    if diff > max_logit_diff:
        raise ExportError(
            errors.VALIDATION_FAILED,
            f"the ONNX logits differ from PyTorch's by up to {diff:.3g} on the synthetic images "
            f"(allowed {max_logit_diff:g}).",
        )
    progress.finish("validate", f"max |logit diff| {diff:.2e}, greedy agreement {agreement:.0%}")

    from msgspec import structs

    manifest = structs.replace(
        manifest,
        files=[],
        validation=Validation(
            prompts=len(SYNTHETIC_IMAGES),
            max_abs_logit_diff=diff,
            max_logit_diff_threshold=max_logit_diff,
            passed=True,
            decode_steps=NEW_TOKENS,
            top1_agreement=agreement,
            compared_tokens=compared,
        ),
        export_seconds=round(time.monotonic() - started, 1),
    )
    (staging / "manifest.json").unlink()
    manifest = structs.replace(manifest, files=file_entries(staging))
    write_manifest(staging, manifest)
    return manifest


def _text_model(loaded: LoadedVision) -> Any:
    if loaded.model_type == "llava":
        return loaded.model.model.language_model
    return loaded.model.model.text_model


def _parameters(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _eos_ids(loaded: LoadedVision) -> list[int]:
    ids: list[int] = []
    for source in (loaded.model.generation_config.eos_token_id, loaded.model.config.text_config.eos_token_id):
        for value in source if isinstance(source, list) else [source]:
            if isinstance(value, int) and value not in ids:
                ids.append(value)
    end = loaded.processor.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    if isinstance(end, int) and end != loaded.processor.tokenizer.unk_token_id and end not in ids:
        ids.append(end)  # SmolVLM's turns end with it
    if not ids:
        raise ExportError(errors.NOT_A_MODEL, "the model names no end-of-sequence token")
    return ids


def _export_decoder(loaded: LoadedVision, output: Path, eos_ids: list[int]) -> Path:
    from optimum.exporters.onnx import onnx_export_from_model
    from transformers import AutoModelForCausalLM

    from exports.vision_configs import embeds_decoder_config

    text_config = loaded.model.config.text_config
    decoder = AutoModelForCausalLM.from_config(text_config).eval()
    decoder.model = _text_model(loaded)
    decoder.lm_head = loaded.model.lm_head
    decoder.generation_config = loaded.model.generation_config
    decoder.generation_config.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else list(eos_ids)
    loaded.processor.save_pretrained(output)
    decoder.config._name_or_path = str(output)
    try:
        with _quiet():
            onnx_export_from_model(
                decoder,
                output,
                task="text-generation-with-past",
                custom_onnx_configs={"model": embeds_decoder_config(text_config)},
                do_validation=False,
                device="cpu",
                no_post_process=True,
            )
    except Exception as exc:
        raise ExportError(
            errors.CONVERSION_FAILED, f"Optimum could not export the decoder ({type(exc).__name__}: {exc})."
        ) from exc
    return output / DECODER_FILE


def _export_encoder(loaded: LoadedVision, path: Path, size: int) -> None:
    """pixel_values [images, 3, size, size] -> image_features [images, tokens_per_image, hidden]."""
    import torch

    pixels = torch.zeros(1, 3, size, size)
    encoder = _llava_encoder(loaded) if loaded.model_type == "llava" else _idefics3_encoder(loaded, pixels)
    try:
        with _quiet(), torch.inference_mode():
            torch.onnx.export(
                encoder,
                (pixels,),
                str(path),
                input_names=["pixel_values"],
                output_names=["image_features"],
                dynamic_axes={"pixel_values": {0: "images"}, "image_features": {0: "images"}},
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:
        raise ExportError(
            errors.CONVERSION_FAILED, f"the vision encoder could not be exported ({type(exc).__name__}: {exc})."
        ) from exc


def _llava_encoder(loaded: LoadedVision) -> Any:
    """The CLIP/SigLIP tower's chosen layer (class token dropped or kept as configured) and the projector."""
    import torch

    config = loaded.model.config

    class Encoder(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            outputs = self.model.model.vision_tower(pixel_values, output_hidden_states=True)
            hidden = outputs.hidden_states[config.vision_feature_layer]
            if config.vision_feature_select_strategy == "default":
                hidden = hidden[:, 1:]
            return self.model.model.multi_modal_projector(hidden)

    return Encoder(loaded.model)


def _idefics3_encoder(loaded: LoadedVision, pixels: Any) -> Any:
    """The SigLIP tower with the connector (pixel shuffle, projection), for one whole image."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, model: Any, positions: torch.Tensor) -> None:
            super().__init__()
            self.model = model
            self.positions = positions

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            # every patch of a whole (unsplit, unpadded) image is real, so the patch positions are those of a
            # full image (taken from an eager run) and no attention mask is needed; the tower's own position
            # bucketing does not trace
            tower = self.model.model.vision_model
            patches = tower.embeddings.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
            hidden = patches + tower.embeddings.position_embedding(self.positions)
            hidden = tower.encoder(inputs_embeds=hidden, attention_mask=None).last_hidden_state
            return self.model.model.connector(tower.post_layernorm(hidden))

    seen: list[torch.Tensor] = []
    embedding = loaded.model.model.vision_model.embeddings.position_embedding
    hook = embedding.register_forward_hook(lambda _module, inputs, _output: seen.append(inputs[0]))
    with torch.inference_mode():
        loaded.model.model.vision_model(pixel_values=pixels)
    hook.remove()
    return Encoder(loaded.model, seen[0][:1].clone())


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


SYNTHETIC_IMAGES = ("gradient", "checkerboard")


def validate_vision(loaded: LoadedVision, folder: Path) -> tuple[float, float, int]:
    """The engine (numpy preprocessing, vision graph, decoder) vs PyTorch (processor, model) on the synthetic
    images: the largest logit difference over the prompt's last position and NEW_TOKENS greedy steps, the
    share of steps whose greedy token agrees, and the steps compared."""
    import torch
    from PIL import Image

    from inference.chat_model import ChatModel
    from inference.vision import ImageEmbeds

    engine = ChatModel.load(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(VALIDATION_THREADS)
    worst, agreed, compared = 0.0, 0, 0
    try:
        for kind in SYNTHETIC_IMAGES:
            data = synthetic_png(kind)
            messages = [{"role": "user", "content": VALIDATION_PROMPT, "images": [data]}]
            prompt = engine._prompt(messages, {})
            parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": VALIDATION_PROMPT}]}]
            text = loaded.processor.apply_chat_template(parts, add_generation_prompt=True)
            image = Image.open(io.BytesIO(data)).convert("RGB")
            inputs = dict(loaded.processor(text=text, images=[image], return_tensors="pt"))
            inputs.pop("token_type_ids", None)
            if inputs["input_ids"][0].tolist() != prompt.token_ids:
                raise ExportError(
                    errors.VALIDATION_FAILED, "the engine's prompt with an image differs from the processor's"
                )
            images = ImageEmbeds(prompt.starts, engine.model.vision.encode([data]))  # type: ignore[union-attr]
            state = engine.model.new_sequence()
            ours = engine.model.forward(state, prompt.token_ids, images=images)[-1]
            ids = inputs["input_ids"]
            with torch.inference_mode():
                for step in range(NEW_TOKENS):
                    feed = {**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
                    theirs = loaded.model(**feed).logits[0, -1].numpy()
                    worst = max(worst, float(np.max(np.abs(theirs - ours))))
                    token = int(theirs.argmax())
                    agreed += int(ours.argmax()) == token
                    compared += 1
                    if step + 1 < NEW_TOKENS:
                        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
                        ours = engine.model.forward(state, [token])[-1]
            state.release()
    finally:
        torch.set_num_threads(threads)
        engine.close()
    return worst, agreed / max(compared, 1), compared
