"""A vision-language export in the engine: numpy preprocessing, one encode per image, features at the image
tokens, the same decode loop; checked against PyTorch's processor and model on real PNG bytes."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from exports.vision_loading import load_vision
from exports.vision_validation import synthetic_png
from inference import ChatModel, GenerationParams
from inference.errors import HF_CONTEXT_LENGTH_EXCEEDED, HF_INVALID_IMAGE, InferenceError
from inference.image_preprocess import decode_image, preprocess
from inference.manifest import read_manifest
from inference.vision import ImageEmbeds
from tests.inference.conftest import CPU_ONE_THREAD

pytest_plugins = ["tests.fixtures.vision_models"]

GREEDY = GenerationParams(max_new_tokens=10, temperature=0)
QUESTION = "What is in the picture?"


FAMILIES = {"idefics3": "tiny_vlm", "idefics3-split": "tiny_vlm_split", "llava": "tiny_llava"}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """(Hugging Face folder, export) of one tiny vision-language family (Idefics3 with and without splitting)."""
    name = FAMILIES[request.param]
    return request.getfixturevalue(f"{name}_source"), request.getfixturevalue(f"{name}_export")


@pytest.fixture(scope="module")
def source(family: tuple[Path, Path]) -> Path:
    return family[0]


@pytest.fixture(scope="module")
def vlm(family: tuple[Path, Path]) -> Iterator[ChatModel]:
    model = ChatModel.load(family[1], CPU_ONE_THREAD)
    yield model
    model.close()


def _messages(*images: bytes) -> list[dict]:
    return [{"role": "user", "content": QUESTION, "images": list(images)}]


def _torch_greedy(source: Path, image: bytes, steps: int) -> list[int]:
    """PyTorch's greedy tokens for the question about `image`, through the Hugging Face processor."""
    import torch
    from PIL import Image

    loaded = load_vision(source)
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = loaded.processor.apply_chat_template(parts, add_generation_prompt=True)
    inputs = dict(loaded.processor(text=text, images=[Image.open(io.BytesIO(image))], return_tensors="pt"))
    inputs.pop("token_type_ids", None)
    with torch.inference_mode():
        output = loaded.model.generate(**inputs, max_new_tokens=steps, do_sample=False, eos_token_id=None)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def test_manifest_records_the_vision_side(family: tuple[Path, Path]) -> None:
    manifest = read_manifest(family[1])
    assert manifest.capabilities.vision
    assert manifest.vision is not None
    assert manifest.vision.image_token == "<image>"
    assert manifest.vision.tokens_per_image == (16 if manifest.model_type == "llava" else 4)
    assert manifest.vision.preprocessing.size == 32
    splits = manifest.vision.preprocessing.do_image_splitting
    assert (manifest.vision.tiling is not None) == splits
    if splits:  # 96-pixel images in 32-pixel tiles: up to 3x3 tiles, each after <fake_token_around_image><row_r_col_c>
        assert [len(row) for row in manifest.vision.tiling.tile_prefix_ids] == [3, 3, 3]
    assert manifest.validation.passed
    assert manifest.validation.top1_agreement == 1.0
    assert "group-query-attention" in manifest.graph_rewrites
    names = {entry.name for entry in manifest.files}
    assert {"model.onnx", "vision_encoder.onnx", "embed_tokens.npy", "preprocessor_config.json"} <= names


# a wide and a tall image, a square one, a small one, and a sliver (one row of tiles when split)
SIZES = [(70, 30), (20, 64), (100, 100), (16, 16), (200, 9)]


def _transparent_png(width: int, height: int) -> bytes:
    """A gradient whose left half fades out to fully transparent (a logo on no background)."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(synthetic_png("gradient", width, height))).convert("RGBA")).copy()
    pixels[:, : width // 2, 3] = np.linspace(0, 255, width // 2, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def test_preprocessing_matches_the_processor(source: Path, vlm: ChatModel) -> None:
    from PIL import Image

    processor = load_vision(source).processor
    assert vlm.info.vision is not None
    images = [synthetic_png("gradient" if index % 2 else "checkerboard", w, h) for index, (w, h) in enumerate(SIZES)]
    for image in [*images, _transparent_png(70, 30)]:
        theirs = processor.image_processor(images=[Image.open(io.BytesIO(image))], return_tensors="np")
        ours = preprocess(decode_image(image), vlm.info.vision.preprocessing)
        pixels = theirs["pixel_values"]
        pixels = pixels[0] if pixels.ndim == 5 else pixels  # Idefics3: [batch, frames, 3, S, S]
        assert ours.shape == pixels.shape
        np.testing.assert_allclose(ours, pixels, atol=1e-5)


def test_the_prompt_lays_out_images_as_the_processor_does(source: Path, vlm: ChatModel) -> None:
    """The engine's prompt ids, two images of different sizes in one message, are the processor's; for a
    splitting export, their text is the processor's layout of each image's tiles."""
    from PIL import Image

    loaded = load_vision(source)
    processor = loaded.processor
    assert vlm.info.vision is not None
    for first, second in itertools.pairwise(SIZES):
        images = [synthetic_png("gradient", *first), synthetic_png("checkerboard", *second)]
        parts = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": QUESTION}]
        text = processor.apply_chat_template([{"role": "user", "content": parts}], add_generation_prompt=True)
        pictures = [Image.open(io.BytesIO(data)) for data in images]
        theirs = processor(text=text, images=pictures)["input_ids"][0]
        prompt = vlm._prompt(_messages(*images), {})
        assert prompt.token_ids == theirs
        if not vlm.info.vision.preprocessing.do_image_splitting:
            continue
        from transformers.models.idefics3.processing_idefics3 import get_image_prompt_string

        grids = processor.image_processor(images=pictures, return_row_col_info=True)
        expected = text
        for rows, cols in zip(grids["rows"][0], grids["cols"][0], strict=True):
            layout = get_image_prompt_string(
                rows, cols, processor.image_seq_len, "<fake_token_around_image>", "<image>", "<global-img>"
            )
            expected = expected.replace("<image>", layout.replace("<image>", "<IMAGE>"), 1)
        decoded = processor.tokenizer.decode(prompt.token_ids, skip_special_tokens=False)
        assert decoded == expected.replace("<IMAGE>", "<image>")
        assert len(prompt.starts) == sum(r * c + 1 for r, c in zip(grids["rows"][0], grids["cols"][0], strict=True))


def test_greedy_tokens_match_pytorch_for_the_same_image(source: Path, vlm: ChatModel) -> None:
    image = synthetic_png("gradient")
    ours = vlm.generate_chat(_messages(image), GenerationParams(max_new_tokens=10, temperature=0, stop_token_ids=()))
    assert ours.token_ids == _torch_greedy(source, image, 10)


def test_two_images_give_different_logits(vlm: ChatModel) -> None:
    logits = []
    for kind in ("gradient", "checkerboard"):
        prompt = vlm._prompt(_messages(synthetic_png(kind)), {})
        assert vlm.model.vision is not None
        features = vlm.model.vision.encode([synthetic_png(kind)])
        state = vlm.model.new_sequence()
        logits.append(vlm.model.forward(state, prompt.token_ids, images=ImageEmbeds(prompt.starts, features))[-1])
        state.release()
    assert np.abs(logits[0] - logits[1]).max() > 1e-3


def test_an_image_sent_again_is_not_encoded_again(vlm: ChatModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Earlier turns' images come back on every turn: their features are kept, newest first, within a budget."""
    from inference import vision

    encoder = vlm.model.vision
    assert encoder is not None
    first = encoder.encode([synthetic_png("gradient", 33, 31)])
    again = encoder.encode([synthetic_png("gradient", 33, 31)])
    assert all(a is b for a, b in zip(first, again, strict=True))  # the same features, not a second run
    assert not first[0].flags.writeable
    other = encoder.encode([synthetic_png("checkerboard", 33, 31)])
    assert np.abs(other[0] - first[0]).max() > 1e-4
    # a budget of one image's features: the next image pushes the first one out
    monkeypatch.setattr(vision, "FEATURE_CACHE_BYTES", sum(frame.nbytes for frame in first))
    encoder.encode([synthetic_png("gradient", 35, 31)])
    assert encoder.encode([synthetic_png("gradient", 33, 31)])[0] is not first[0]
    assert encoder._cached_bytes <= vision.FEATURE_CACHE_BYTES


def test_image_tokens_count_against_the_context(vlm: ChatModel) -> None:
    spec = vlm.info.vision
    assert spec is not None
    image = synthetic_png("gradient")
    with_image = vlm.count_chat_tokens(_messages(image))
    per_image = with_image - vlm.count_chat_tokens(_messages())  # the template's <image>, expanded
    whole = len(spec.image_prefix_ids) + spec.tokens_per_image + len(spec.image_suffix_ids)
    assert per_image > whole if spec.preprocessing.do_image_splitting else per_image == whole
    many = _messages(*[image] * (vlm.context_length // per_image + 1))
    with pytest.raises(InferenceError) as caught:
        vlm.start_chat(many, GREEDY)
    assert caught.value.code == HF_CONTEXT_LENGTH_EXCEEDED


def test_a_split_image_counts_its_tiles_against_the_context(tiny_vlm_split_export: Path) -> None:
    """A square image splits into 3x3 tiles, a sliver into 1x3: with room for the sliver's prompt only, the
    square one is refused before any work."""
    model = ChatModel.load(tiny_vlm_split_export, CPU_ONE_THREAD)
    try:
        spec = model.info.vision
        assert spec is not None
        assert spec.tiling is not None
        square, sliver = synthetic_png("gradient", 60, 60), synthetic_png("gradient", 200, 9)
        tile = len(spec.tiling.tile_prefix_ids[0][0]) + spec.tokens_per_image
        more = model.count_chat_tokens(_messages(square)) - model.count_chat_tokens(_messages(sliver))
        assert more == 6 * tile + 2 * len(spec.tiling.row_end_ids)  # two more rows of three tiles
        room = GenerationParams(max_new_tokens=model.context_length - model.count_chat_tokens(_messages(sliver)))
        model.start_chat(_messages(sliver), room)  # fits: the run is built, its image encoded
        with pytest.raises(InferenceError) as caught:
            model.start_chat(_messages(square), room)
        assert caught.value.code == HF_CONTEXT_LENGTH_EXCEEDED
        assert caught.value.details["prompt_tokens"] == model.count_chat_tokens(_messages(square))
    finally:
        model.close()


@pytest.mark.parametrize(
    "data",
    [b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"GIF89a not really", b""],
    ids=["corrupt-png", "wrong-type", "empty"],
)
def test_unreadable_images_are_refused(vlm: ChatModel, data: bytes) -> None:
    with pytest.raises(InferenceError) as caught:
        vlm.generate_chat(_messages(data), GREEDY)
    assert caught.value.code == HF_INVALID_IMAGE


def test_an_image_with_too_many_pixels_is_refused_before_decoding() -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buffer, format="PNG")  # 48 Mpx of one colour: a small file
    with pytest.raises(InferenceError) as caught:
        decode_image(buffer.getvalue())
    assert caught.value.code == HF_INVALID_IMAGE
    assert "8000x6000" in caught.value.message


def test_a_text_only_turn_on_a_vision_export_still_works(source: Path, vlm: ChatModel) -> None:
    """Text-only messages reach the template as content parts, as the processor's template reads them (SmolVLM's
    renders nothing of a plain string)."""
    processor = load_vision(source).processor
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    parts = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages]
    text = processor.apply_chat_template(parts, add_generation_prompt=True)
    assert QUESTION in text
    assert vlm._prompt(messages, {}).token_ids == processor.tokenizer(text)["input_ids"]
    result = vlm.generate_chat(messages, GREEDY)
    assert result.usage.completion_tokens > 0


@pytest.mark.anyio
async def test_an_image_sequence_decodes_in_one_batch_with_a_text_sequence(
    vlm: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import time
    from typing import Any

    from inference.events import GenerationResult

    params = GenerationParams(max_new_tokens=12, temperature=0, stop_token_ids=())
    with_image = _messages(synthetic_png("checkerboard"))
    text_only = [{"role": "user", "content": "Hello world! How are you today?"}]
    alone = [vlm.generate_chat(m, params).token_ids for m in (with_image, text_only)]

    rows: list[int] = []
    forward_rows = vlm.model.forward_rows

    def counting(slots: Any, first: int, token_ids: Any, lengths: Any, *args: Any) -> np.ndarray:
        # the first step waits until both requests are in: a tiny model could otherwise finish one before the
        # other arrives
        deadline = time.monotonic() + 10
        while not rows and vlm.running + vlm.queued < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        rows.append(len(lengths))
        return forward_rows(slots, first, token_ids, lengths, *args)

    monkeypatch.setattr(vlm.model, "forward_rows", counting)
    assert vlm.scheduler.limits.max_batch_size >= 2

    async def tokens(messages: list[dict]) -> list[int]:
        result = None
        async for event in vlm.stream_chat(messages, params):
            result = event
        assert isinstance(result, GenerationResult)
        return result.token_ids

    together = await asyncio.gather(tokens(with_image), tokens(text_only))
    assert list(together) == alone
    assert max(rows) == 2  # decoding steps shared by both sequences
