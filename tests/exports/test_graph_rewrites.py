"""The decoding rewrites change a graph only where they apply, and keep what generation reads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from exports.attention import use_group_query_attention
from exports.last_logits import keep_last_position_logits
from exports.packing import pack_projections


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


def _run(model: onnx.ModelProto, hidden: np.ndarray, **extra: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"hidden": hidden, **extra})[0]


def test_last_position_logits_are_the_last_row_of_the_full_logits() -> None:
    model = _projection_graph("MatMul")
    hidden = np.random.default_rng(0).standard_normal((1, 5, 4)).astype(np.float32)
    full = _run(model, hidden)
    assert keep_last_position_logits(model)
    last = _run(model, hidden)
    assert last.shape == (1, 1, 6)
    np.testing.assert_allclose(last, full[:, -1:], rtol=1e-6)
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_param == "logits_to_keep"


def test_logits_to_keep_is_an_optional_input_that_returns_more_rows() -> None:
    model = _projection_graph("MatMul")
    hidden = np.random.default_rng(1).standard_normal((1, 5, 4)).astype(np.float32)
    full = _run(model, hidden)
    keep_last_position_logits(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # clients that know nothing of it (Optimum) see the same required inputs as before
    assert [item.name for item in session.get_inputs()] == ["hidden"]
    assert [item.name for item in session.get_overridable_initializers()] == ["logits_to_keep"]
    three = _run(model, hidden, logits_to_keep=np.array([3], dtype=np.int64))
    np.testing.assert_allclose(three, full[:, -3:], rtol=1e-6)


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


def _mlp_graph(*, shared_input: bool = True) -> onnx.ModelProto:
    """x [1, seq, 4] -> SiLU(x @ gate) * (x @ up) -> y [1, seq, 6], as Optimum exports a Llama MLP."""
    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), name) for name in ("g", "u")]
    prefix = "/model/layers.0/mlp/"
    nodes = [
        helper.make_node("MatMul", ["x", "g"], ["gate"], name=prefix + "gate_proj/MatMul"),
        helper.make_node("Sigmoid", ["gate"], ["sigmoid"], name=prefix + "act_fn/Sigmoid"),
        helper.make_node("Mul", ["gate", "sigmoid"], ["silu"], name=prefix + "act_fn/Mul"),
        helper.make_node("MatMul", ["x" if shared_input else "x2", "u"], ["up"], name=prefix + "up_proj/MatMul"),
        helper.make_node("Mul", ["silu", "up"], ["y"], name=prefix + "Mul"),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "seq", 4]) for name in ("x", "x2")]
    graph = helper.make_graph(
        nodes, "mlp", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", 6])], weights
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _run_mlp(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x, "x2": x})[0]


def test_gate_and_up_projections_are_packed_into_one_matmul_with_the_same_result() -> None:
    model = _mlp_graph()
    x = np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32)
    expected = _run_mlp(model, x)
    assert pack_projections(model) == ("packed-gate-up",)
    assert [node.op_type for node in model.graph.node if node.op_type in ("MatMul", "Split")] == ["MatMul", "Split"]
    assert [tuple(weight.dims) for weight in model.graph.initializer] == [(4, 12)]
    from onnxruntime.transformers.onnx_model import OnnxModel

    OnnxModel(model).topological_sort()
    np.testing.assert_allclose(_run_mlp(model, x), expected, rtol=1e-6, atol=1e-6)


def test_projections_of_different_inputs_are_left_alone() -> None:
    model = _mlp_graph(shared_input=False)
    before = model.SerializeToString()
    assert pack_projections(model) == ()
    assert model.SerializeToString() == before
