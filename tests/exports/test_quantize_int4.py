"""int4 rounding (exports/quantize.py): the searched blocks beat ONNX Runtime's round-to-nearest, and the
MatMulNBits nodes written from them run in ONNX Runtime and compute with exactly those blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from exports import quantize
from exports.quantize import (
    INT4_BLOCK_SIZE,
    INT4_LOGITS_BLOCK_SIZE,
    input_importance,
    pack_int4,
    quantize_graph,
    search_blocks,
)


def q4_1_like(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A [rows, cols] weight made of GGUF Q4_1 blocks of 32 along rows: min + scale * (0..15), as the default
    model's dequantized weights are; the block minimum is no multiple of the scale (as in real files)."""
    rng = np.random.default_rng(seed)
    blocks = rows // 32
    scale = rng.uniform(0.002, 0.02, (blocks, 1, cols)).astype(np.float32)
    low = -scale * rng.uniform(3.0, 12.0, (blocks, 1, cols)).astype(np.float32)
    codes = rng.integers(0, 16, (blocks, 32, cols)).astype(np.float32)
    return (low + scale * codes).reshape(rows, cols)


def dequantize(codes: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, rows: int) -> np.ndarray:
    """[N, blocks, size] codes back to the [K, N] weight they stand for."""
    values = scales[..., None] * (codes.astype(np.float32) - zero_points[..., None].astype(np.float32))
    return values.reshape(values.shape[0], -1).T[:rows]


def unpack(packed: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, rows: int) -> np.ndarray:
    """MatMulNBits' B / scales / zero points (ONNX Runtime's layout) back to the [K, N] weight."""
    cols, blocks, _ = packed.shape
    codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(cols, blocks, -1)
    zeros = np.stack([zero_points & 0x0F, zero_points >> 4], axis=-1).reshape(cols, -1)[:, :blocks]
    return dequantize(codes, scales, zeros, rows)


def ort_round_to_nearest(weight: np.ndarray) -> np.ndarray:
    """ONNX Runtime's own int4 blocks of `weight` (what int4 exports used before the search), dequantized."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=INT4_BLOCK_SIZE, is_symmetric=False, accuracy_level=4)
    packed, scales, zero_points = DefaultWeightOnlyQuantizer(config).qbits_block_quant(weight.copy())
    return unpack(packed, scales, zero_points, weight.shape[0])


def block_errors(weight: np.ndarray, approx: np.ndarray, importance: np.ndarray) -> np.ndarray:
    """Importance-weighted squared error of every block of 32 along K."""
    error = importance[:, None] * np.square(approx - weight)
    return error.reshape(-1, INT4_BLOCK_SIZE, weight.shape[1]).sum(axis=1)


@pytest.mark.parametrize("weighted", [False, True])
def test_searched_blocks_have_less_error_than_round_to_nearest(weighted: bool) -> None:
    weight = q4_1_like(256, 96)
    rng = np.random.default_rng(1)
    # a few input channels carry far larger values than the rest, as in real models
    importance = np.where(rng.random(256) < 0.05, 300.0, 1.0).astype(np.float32) if weighted else np.ones(256)
    searched = dequantize(*search_blocks(weight, INT4_BLOCK_SIZE, importance if weighted else None), rows=256)
    nearest = ort_round_to_nearest(weight)
    ours, theirs = block_errors(weight, searched, importance), block_errors(weight, nearest, importance)
    assert np.all(ours <= theirs * (1 + 1e-5) + 1e-12)  # round-to-nearest's scale is one of the candidates
    assert ours.sum() < 0.8 * theirs.sum()


def test_search_keeps_exact_blocks_and_zero_blocks() -> None:
    weight = np.zeros((64, 3), dtype=np.float32)
    weight[:32, 0] = 0.01 * (np.arange(32) % 16 - 5)  # exactly on a 4-bit grid through zero
    codes, scales, zero_points = search_blocks(weight, INT4_BLOCK_SIZE)
    assert codes.dtype == zero_points.dtype == np.uint8
    assert codes.max() <= 15
    assert zero_points.max() <= 15
    np.testing.assert_allclose(dequantize(codes, scales, zero_points, 64), weight, atol=1e-7)


def _matmul_graph(path: Path, weight: np.ndarray, output: str) -> None:
    rows, cols = weight.shape
    node = helper.make_node("MatMul", ["x", "w"], [output], name="/proj/MatMul")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", rows])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", cols])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), str(path))


@pytest.mark.parametrize(("output", "block_size"), [("y", INT4_BLOCK_SIZE), ("logits", INT4_LOGITS_BLOCK_SIZE)])
def test_written_matmulnbits_computes_with_the_searched_blocks(tmp_path: Path, output: str, block_size: int) -> None:
    rows, cols = 96, 40  # 3 (or 6) blocks along K: an odd count, so the zero points' last byte is half padding
    weight = q4_1_like(rows, cols, seed=2)
    _matmul_graph(tmp_path / "model.onnx", weight, output)
    quantized = quantize_graph(tmp_path / "model.onnx", tmp_path / "int4.onnx", "int4")

    model = onnx.load(str(quantized))
    (node,) = model.graph.node
    attributes = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
    assert (node.op_type, node.domain) == ("MatMulNBits", "com.microsoft")
    assert attributes == {"K": rows, "N": cols, "bits": 4, "block_size": block_size, "accuracy_level": 4}
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    written = [initializers[name] for name in node.input[1:]]
    expected = search_blocks(weight, block_size)  # no tokenizer beside the graph: unweighted
    for got, want in zip(written, pack_int4(*expected), strict=True):
        np.testing.assert_array_equal(got, want)

    x = np.random.default_rng(3).standard_normal((4, rows)).astype(np.float32)
    session = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    reference = x @ dequantize(*expected, rows=rows)
    # accuracy_level 4 rounds the input to int8 per block: about 1% of the output's scale
    np.testing.assert_allclose(y, reference, atol=0.02 * np.abs(reference).max())


def test_calibration_weighs_every_matmul_input_channel(tiny_export: Path) -> None:
    graph = tiny_export / "model.onnx"
    model = onnx.load(str(graph), load_external_data=False)
    constants = {init.name: init for init in model.graph.initializer}
    weights = {node.input[1] for node in model.graph.node if node.op_type == "MatMul" and node.input[1] in constants}
    importance = input_importance(graph)
    assert set(importance) == weights
    for name, values in importance.items():
        assert values.shape == (constants[name].dims[0],)
        assert np.all(values > 0)
    assert not list(tiny_export.glob(".calibration-*"))  # the graph copy with extra outputs is gone


def test_calibration_failure_falls_back_to_plain_squared_error(
    tiny_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(graph: Path) -> dict[str, np.ndarray]:
        raise RuntimeError("no")

    monkeypatch.setattr(quantize, "_input_importance", broken)
    assert input_importance(tiny_export / "model.onnx") == {}


def test_int4_export_uses_finer_blocks_for_the_vocabulary_projection_only(tiny_export_int4: Path) -> None:
    model = onnx.load(str(tiny_export_int4 / "model.onnx"), load_external_data=False)
    sizes = {
        "logits" in node.output: helper.get_attribute_value(next(a for a in node.attribute if a.name == "block_size"))
        for node in model.graph.node
        if node.op_type == "MatMulNBits"
    }
    assert sizes == {True: INT4_LOGITS_BLOCK_SIZE, False: INT4_BLOCK_SIZE}
