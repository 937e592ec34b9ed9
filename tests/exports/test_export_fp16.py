"""`--dtype fp16`: a float16 graph (CUDA's attention kernel takes float16 only) with a float16 cache and float32
logits, validated against PyTorch on the CPU provider, and the refusals of the option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from app.cli import main
from exports import errors
from exports.errors import ExportError
from exports.export import default_alias, export_model
from exports.float16 import convert_to_float16
from exports.manifest import read_manifest
from exports.progress import NullProgress
from exports.sources import resolve_source
from exports.validation import Reference, compare, require_logit_diff

LAYERS = 2  # tests/fixtures/models.py's tiny Llama
CACHE_NAMES = {
    f"{prefix}.{layer}.{kind}"
    for prefix in ("past_key_values", "present")
    for layer in range(LAYERS)
    for kind in ("key", "value")
}


def _graph(folder: Path) -> onnx.ModelProto:
    return onnx.load(str(folder / read_manifest(folder).onnx_file))


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value, inferred the way ONNX Runtime's tools do (they know the contrib operators)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    types = {value.name: value.type.tensor_type.elem_type for value in values}
    types.update({initializer.name: initializer.data_type for initializer in inferred.graph.initializer})
    return types


def test_cache_is_float16_and_logits_float32(tiny_export_fp16: Path) -> None:
    graph = _graph(tiny_export_fp16).graph
    types = {value.name: value.type.tensor_type.elem_type for value in [*graph.input, *graph.output]}
    assert set(types) >= CACHE_NAMES
    assert {types[name] for name in CACHE_NAMES} == {TensorProto.FLOAT16}
    assert types["logits"] == TensorProto.FLOAT
    assert types["input_ids"] == TensorProto.INT64


def test_attention_and_norms_run_in_float16(tiny_export_fp16: Path) -> None:
    model = _graph(tiny_export_fp16)
    types = _value_types(model)
    attention = [node for node in model.graph.node if node.op_type == "GroupQueryAttention"]
    norms = [node for node in model.graph.node if node.op_type == "SimplifiedLayerNormalization"]
    assert len(attention) == LAYERS
    assert len(norms) == 2 * LAYERS + 1  # two per layer and the final norm
    for node in attention:
        query, past_key, past_value, cos, sin = (node.input[i] for i in (0, 3, 4, 7, 8))
        assert {types[name] for name in (query, past_key, past_value, cos, sin)} == {TensorProto.FLOAT16}, node.name
        assert {types[name] for name in node.output} == {TensorProto.FLOAT16}, node.name
    for node in norms:
        assert {types[name] for name in [*node.input, *node.output]} == {TensorProto.FLOAT16}, node.name
        assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "stash_type")) == 1
    assert not [node.name for node in model.graph.node if node.op_type == "Pow"], "a square left in float16"


def test_manifest_records_the_precision(tiny_export_fp16: Path, tiny_export: Path) -> None:
    manifest = read_manifest(tiny_export_fp16)
    assert manifest.dtype == "fp16"
    assert manifest.kv_cache_dtype == "float16"
    assert manifest.logits_dtype == "float32"
    assert manifest.quantization == "none"
    assert manifest.graph_rewrites[-2:] == ["simplified-layer-norm", "float16"]
    # the weights are half the float32 export's (the tokenizer files are the same)
    fp32 = read_manifest(tiny_export)
    assert 0.45 < manifest.size_bytes / fp32.size_bytes < 0.55
    assert fp32.dtype == "fp32"
    assert fp32.kv_cache_dtype == "float32"


def test_validation_figures_are_recorded(tiny_export_fp16: Path) -> None:
    validation = read_manifest(tiny_export_fp16).validation
    assert validation.passed
    assert validation.max_abs_logit_diff < 1e-4  # the float32 graph, checked before the conversion
    assert validation.float16_max_abs_logit_diff is not None
    assert validation.float16_max_logit_diff_threshold == 0.5
    # float16 rounding shows (so the float16 graph is what was compared), well inside the bound (measured 4e-4)
    assert validation.max_abs_logit_diff < validation.float16_max_abs_logit_diff < 5e-3
    assert validation.top1_agreement == 1.0
    assert validation.compared_tokens == 8 * 12  # 8 prompts, 12 greedy tokens each


def _ort_greedy(graph: Path, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding straight through ONNX Runtime's CPU provider: one prefill, then one token per run."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    inputs = {item.name: item for item in session.get_inputs()}
    names = [item.name for item in session.get_outputs()]
    past = {
        name: np.zeros((1, item.shape[1], 0, item.shape[3]), dtype=np.float16)
        for name, item in inputs.items()
        if name.startswith("past_key_values.")
    }
    tokens, feed_ids, start = [], prompt, 0
    for _ in range(steps):
        total = start + len(feed_ids)
        feed = {
            "input_ids": np.array([feed_ids], dtype=np.int64),
            "attention_mask": np.ones((1, total), dtype=np.int64),
            "position_ids": np.arange(start, total, dtype=np.int64)[None, :],
            **past,
        }
        outputs = dict(zip(names, session.run(None, feed), strict=True))
        assert outputs["logits"].dtype == np.float32
        past = {
            "past_key_values." + name[len("present.") :]: value for name, value in outputs.items() if "present." in name
        }
        assert {value.dtype for value in past.values()} == {np.dtype(np.float16)}
        token = int(outputs["logits"][0, -1].argmax())
        tokens.append(token)
        feed_ids, start = [token], total
    return tokens


def test_greedy_tokens_match_pytorch(tiny_export_fp16: Path, tiny_hf_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_model)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hello world!"}], add_generation_prompt=True)
    if isinstance(prompt, dict):
        prompt = prompt["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_model).eval()
    with torch.inference_mode():
        generated = model.generate(
            torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    expected = [int(token) for token in generated[0, len(prompt) :]]
    assert len(expected) == 8
    assert _ort_greedy(tiny_export_fp16 / "model.onnx", list(prompt), 8) == expected


def test_fp16_alias_gets_a_suffix(tiny_hf_model: Path) -> None:
    resolved = resolve_source(str(tiny_hf_model))
    assert default_alias(resolved, "none", "fp16") == "tiny-llama-fp16"
    assert default_alias(resolved, "none") == "tiny-llama"


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_fp16_with_quantization_is_refused(tmp_path: Path, tiny_hf_model: Path, quantize: str) -> None:
    with pytest.raises(ExportError) as caught:
        export_model(str(tiny_hf_model), models_dir=tmp_path / "models", quantize=quantize, dtype="fp16")
    assert caught.value.code == errors.INVALID_OPTION
    assert f"--dtype fp16 cannot be combined with --quantize {quantize}" in caught.value.message
    assert not (tmp_path / "models").exists()


def test_unknown_dtype_is_refused(tmp_path: Path, tiny_hf_model: Path) -> None:
    with pytest.raises(ExportError) as caught:
        export_model(str(tiny_hf_model), models_dir=tmp_path / "models", dtype="bf16")
    assert caught.value.code == errors.INVALID_OPTION
    assert "choose fp32 or fp16" in caught.value.message


def test_cli_refuses_fp16_with_quantization(
    tmp_path: Path, tiny_hf_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BETH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HF_MODELS_DIR", raising=False)
    result = CliRunner().invoke(main, ["export", str(tiny_hf_model), "--dtype", "fp16", "--quantize", "int4"])
    assert result.exit_code == 2
    assert "EXPORT_INVALID_OPTION" in result.output
    assert "--dtype fp16 cannot be combined" in result.output


def test_a_square_outside_a_norm_is_refused(tmp_path: Path) -> None:
    """A graph whose squares are not all inside a fusable norm would overflow in float16: refused, untouched."""
    two = helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]))
    square = helper.make_node("Pow", ["x", "two"], ["y"], name="/model/act/Pow")
    graph = helper.make_graph(
        [two, square],
        "squares",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    before = path.read_bytes()
    with pytest.raises(ExportError) as caught:
        convert_to_float16(path, large=False)
    assert caught.value.code == errors.UNSUPPORTED_ARCHITECTURE
    assert "/model/act/Pow" in caught.value.message
    assert "--dtype fp32" in caught.value.message
    assert path.read_bytes() == before


def test_non_finite_logits_fail_every_bound(tmp_path: Path) -> None:
    """A float16 overflow shows as inf or NaN logits; NaN must not pass as "not above the bound"."""
    nan = helper.make_node("Constant", [], ["nan"], value=helper.make_tensor("nan", TensorProto.FLOAT, [], [np.nan]))
    graph = helper.make_graph(
        [
            nan,
            helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["ids", "nan"], ["scores"]),
            helper.make_node("Unsqueeze", ["scores", "axis"], ["logits"]),
        ],
        "nan-logits",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, "total"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "sequence", 1])],
        [helper.make_tensor("axis", TensorProto.INT64, [1], [2])],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    reference = Reference(ids=[1, 2, 3, 4], prompt_len=2, logits=np.zeros((4, 1), dtype=np.float32))
    comparison = compare(path, [reference], NullProgress(), "validate", "Validating")
    assert comparison.max_abs_logit_diff == float("inf")
    with pytest.raises(ExportError) as caught:
        require_logit_diff(comparison, 0.5, "float16 ")
    assert caught.value.code == errors.VALIDATION_FAILED


def test_float16_graph_beyond_the_bound_is_refused(tmp_path: Path, tiny_hf_model: Path) -> None:
    """--max-logit-diff bounds the float16 graph (the float32 one before it keeps at least its own default)."""
    models_dir = tmp_path / "models"
    with pytest.raises(ExportError) as caught:
        export_model(str(tiny_hf_model), models_dir=models_dir, dtype="fp16", max_logit_diff=1e-6, min_agreement=0.0)
    assert caught.value.code == errors.VALIDATION_FAILED
    assert "the float16 ONNX graph differs from PyTorch" in caught.value.message
    assert not any(models_dir.iterdir()), "a refused export left files behind"


def test_large_graphs_are_converted_with_external_data(tmp_path: Path, tiny_export: Path) -> None:
    """Graphs above protobuf's 2 GB take their weights to a side file; the result runs like the single file."""
    import onnxruntime as ort

    graph = tmp_path / "model.onnx"
    graph.write_bytes((tiny_export / "model.onnx").read_bytes())
    half = convert_to_float16(graph, large=True)
    assert half.fused_norms == 2 * LAYERS + 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", "model.onnx.float16.data"]
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    cache = [item.type for item in session.get_inputs() if item.name.startswith("past_key_values.")]
    assert cache == ["tensor(float16)"] * 2 * LAYERS
