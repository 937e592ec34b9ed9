"""The decoding rewrites change a graph only where they apply, and keep what generation reads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from exports.attention import use_group_query_attention
from exports.last_logits import keep_last_position_logits


def _projection_graph(logits_op: str) -> onnx.ModelProto:
    """hidden [1, seq, 4] -> MatMul with a [4, 6] weight (-> Add of a bias when `logits_op` is Add) -> logits."""
    weight = numpy_helper.from_array(np.arange(24, dtype=np.float32).reshape(4, 6) / 10, "weight")
    bias = numpy_helper.from_array(np.ones(6, dtype=np.float32), "bias")
    nodes = [helper.make_node("MatMul", ["hidden", "weight"], ["projected" if logits_op == "Add" else "logits"])]
    if logits_op == "Add":
        nodes.append(helper.make_node("Add", ["projected", "bias"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "projection",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, "seq", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "seq", 6])],
        [weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _run(model: onnx.ModelProto, hidden: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"hidden": hidden})[0]


def test_last_position_logits_are_the_last_row_of_the_full_logits() -> None:
    model = _projection_graph("MatMul")
    hidden = np.random.default_rng(0).standard_normal((1, 5, 4)).astype(np.float32)
    full = _run(model, hidden)
    assert keep_last_position_logits(model)
    last = _run(model, hidden)
    assert last.shape == (1, 1, 6)
    np.testing.assert_allclose(last, full[:, -1:], rtol=1e-6)
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 1


def test_logits_not_made_by_a_matmul_are_left_alone() -> None:
    model = _projection_graph("Add")
    before = model.SerializeToString()
    assert not keep_last_position_logits(model)
    assert model.SerializeToString() == before


def test_group_query_attention_is_not_used_for_unsupported_families() -> None:
    model = _projection_graph("MatMul")
    before = model.SerializeToString()
    config = SimpleNamespace(model_type="gemma", num_hidden_layers=1, num_attention_heads=1)
    assert use_group_query_attention(model, config) == 0
    assert model.SerializeToString() == before


def test_group_query_attention_is_not_used_when_a_layer_does_not_match() -> None:
    model = _projection_graph("MatMul")  # a llama config, but no attention pattern in the graph
    before = model.SerializeToString()
    config = SimpleNamespace(model_type="llama", num_hidden_layers=1, num_attention_heads=1)
    assert use_group_query_attention(model, config) == 0
    assert model.SerializeToString() == before
