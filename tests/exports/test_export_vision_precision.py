"""Quantized and float16 vision-language exports: the decoder is quantized (int8, int4) or converted to float16
as a text decoder is; the vision encoder is converted too (int8, or float16) only when the whole image path
still agrees with PyTorch, and the manifest says which encoder was kept, with the figures of both. Each export
answers a turn with an image."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from exports.export import export_model
from exports.manifest import read_manifest
from exports.vision_encoder import try_converted_encoder
from exports.vision_loading import load_vision
from exports.vision_validation import VALIDATION_PROMPT, synthetic_png
from inference import ChatModel, GenerationParams
from inference.manifest import Manifest
from tests.inference.conftest import CPU_ONE_THREAD

pytest_plugins = ["tests.fixtures.vision_models"]

# the tiny models' random logits are flat: a quantized decoder agrees with PyTorch on 60-100% of greedy tokens,
# so the thresholds are off here (the agreement is still measured and recorded)
PRECISIONS = {"int8": {"quantize": "int8"}, "int4": {"quantize": "int4"}, "fp16": {"dtype": "fp16"}}


@pytest.fixture(scope="module", params=list(PRECISIONS))
def export(
    request: pytest.FixtureRequest, tiny_vlm_split_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The splitting tiny Idefics3 (SmolVLM's layout and template) exported as int8, int4 or float16."""
    models_dir = tmp_path_factory.mktemp(f"vision-{request.param}")
    options = PRECISIONS[request.param]
    export_model(str(tiny_vlm_split_source), models_dir=models_dir, alias="vlm", min_agreement=0.0, **options)
    return models_dir / "vlm"


@pytest.fixture(scope="module")
def manifest(export: Path) -> Manifest:
    return read_manifest(export)


def _ops(graph: Path) -> collections.Counter[str]:
    return collections.Counter(node.op_type for node in onnx.load(str(graph)).graph.node)


def _io_types(graph: Path) -> dict[str, int]:
    model = onnx.load(str(graph), load_external_data=False).graph
    return {value.name: value.type.tensor_type.elem_type for value in [*model.input, *model.output]}


def test_the_decoder_is_converted_as_a_text_decoder_is(export: Path, manifest: Manifest) -> None:
    ops = _ops(export / manifest.onnx_file)
    types = _io_types(export / manifest.onnx_file)
    assert types["inputs_embeds"] == TensorProto.FLOAT  # the engine feeds every export float32 embeddings
    assert types["logits"] == TensorProto.FLOAT
    if manifest.quantization == "int8":
        assert ops["MatMulInteger"] > 0
    elif manifest.quantization == "int4":
        assert ops["MatMulNBits"] > 0
    else:
        assert manifest.dtype == "fp16"
        assert manifest.kv_cache_dtype == "float16"
        assert types["past_key_values.0.key"] == TensorProto.FLOAT16
        assert "float16" in manifest.graph_rewrites


def test_the_encoder_is_converted_only_when_agreement_holds(export: Path, manifest: Manifest) -> None:
    vision, validation = manifest.vision, manifest.validation
    assert vision is not None
    assert validation.float_encoder_top1_agreement is not None
    assert validation.converted_encoder_top1_agreement is not None
    assert validation.converted_encoder_max_abs_logit_diff is not None
    kept = vision.encoder_precision != "fp32"
    holds = validation.converted_encoder_top1_agreement >= validation.float_encoder_top1_agreement
    if manifest.dtype == "fp16":
        assert validation.float16_max_logit_diff_threshold is not None
        holds = holds and validation.converted_encoder_max_abs_logit_diff <= validation.float16_max_logit_diff_threshold
    assert kept == holds
    # the figures at the top are the export's as kept
    chosen = "converted" if kept else "float"
    assert validation.top1_agreement == getattr(validation, f"{chosen}_encoder_top1_agreement")
    ops, types = _ops(export / vision.encoder_file), _io_types(export / vision.encoder_file)
    assert types["pixel_values"] == types["image_features"] == TensorProto.FLOAT
    weights = {i.data_type for i in onnx.load(str(export / vision.encoder_file)).graph.initializer}
    if vision.encoder_precision == "int8":
        assert ops["MatMulInteger"] > 0
    elif vision.encoder_precision == "fp16":
        assert TensorProto.FLOAT16 in weights
    else:
        assert ops["MatMulInteger"] == 0
        assert TensorProto.FLOAT16 not in weights
    assert vision.encoder_precision in (("int8", "fp32") if manifest.quantization != "none" else ("fp16", "fp32"))


def test_the_validation_figures_are_recorded(manifest: Manifest) -> None:
    validation = manifest.validation
    assert validation.passed
    assert validation.max_abs_logit_diff < 1e-4  # the float32 export, checked before any conversion
    assert validation.min_agreement_threshold == 0.0
    assert validation.compared_tokens == 24  # two synthetic images, 12 greedy steps each
    if manifest.quantization != "none":
        assert validation.quantized_max_abs_logit_diff is not None
    else:
        assert validation.float16_max_abs_logit_diff is not None
        assert validation.float16_max_abs_logit_diff < 0.01
        assert validation.top1_agreement == 1.0


@pytest.fixture(scope="module")
def engine(export: Path) -> Iterator[ChatModel]:
    model = ChatModel.load(export, CPU_ONE_THREAD)
    yield model
    model.close()


def test_the_export_answers_a_turn_with_an_image(engine: ChatModel) -> None:
    params = GenerationParams(max_new_tokens=6, temperature=0, stop_token_ids=())
    answers = [
        engine.generate_chat([{"role": "user", "content": VALIDATION_PROMPT, "images": [synthetic_png(kind)]}], params)
        for kind in ("gradient", "checkerboard")
    ]
    assert [answer.usage.completion_tokens for answer in answers] == [6, 6]
    assert answers[0].usage.prompt_tokens > 60  # the image's 3x3 tiles and the whole image


def test_a_float16_export_answers_as_pytorch_does(
    engine: ChatModel, manifest: Manifest, tiny_vlm_split_source: Path
) -> None:
    import io

    import torch
    from PIL import Image

    if manifest.dtype != "fp16":
        pytest.skip("quantized exports only agree with PyTorch most of the time (recorded above)")
    loaded = load_vision(tiny_vlm_split_source)
    image = synthetic_png("checkerboard")
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": VALIDATION_PROMPT}]}]
    text = loaded.processor.apply_chat_template(parts, add_generation_prompt=True)
    inputs = dict(loaded.processor(text=text, images=[Image.open(io.BytesIO(image))], return_tensors="pt"))
    inputs.pop("token_type_ids", None)
    with torch.inference_mode():
        output = loaded.model.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=None)
    expected = output[0, inputs["input_ids"].shape[1] :].tolist()
    params = GenerationParams(max_new_tokens=8, temperature=0, stop_token_ids=())
    ours = engine.generate_chat([{"role": "user", "content": VALIDATION_PROMPT, "images": [image]}], params)
    assert ours.token_ids == expected


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_a_converted_encoder_that_does_not_hold_is_put_back(
    precision: str, tiny_vlm_export: Path, tmp_path: Path
) -> None:
    """The float32 graph comes back byte for byte when the validation says no; it is replaced when it says yes."""
    original = (tiny_vlm_export / "vision_encoder.onnx").read_bytes()
    graph = tmp_path / "vision_encoder.onnx"
    graph.write_bytes(original)
    seen: list[collections.Counter[str]] = []
    assert not try_converted_encoder(graph, precision, lambda: seen.append(_ops(graph)) or False)  # type: ignore[arg-type, func-returns-value]
    assert graph.read_bytes() == original
    assert sorted(path.name for path in tmp_path.iterdir()) == ["vision_encoder.onnx"]
    assert try_converted_encoder(graph, precision, lambda: True)  # type: ignore[arg-type]
    assert graph.read_bytes() != original
    assert sorted(path.name for path in tmp_path.iterdir()) == ["vision_encoder.onnx"]
    converted = np.array([i.data_type for i in onnx.load(str(graph)).graph.initializer])
    if precision == "int8":
        assert seen[0]["MatMulInteger"] > 0  # what the validation saw was the converted graph
    else:
        assert (converted == TensorProto.FLOAT16).any()
