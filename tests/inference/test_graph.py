"""The engine learns the cache layout from the graph: past/present pairs, their order, and `position_ids`."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from inference import InferenceError, OnnxCausalLM
from inference.export_folder import ExportInfo
from tests.inference.conftest import CPU_ONE_THREAD


def _toy_graph(path: Path, layers: int, position_ids: bool, drop_present: int | None = None) -> ExportInfo:
    """A graph with the generation interface only (identity nodes): enough to read its names and shapes."""
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
    ]
    if position_ids:
        inputs.append(helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.INT64, ["batch", "seq"])]
    nodes = [helper.make_node("Identity", ["input_ids"], ["logits"])]
    for layer in range(layers):
        for kind in ("key", "value"):
            past, present = f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}"
            inputs.append(helper.make_tensor_value_info(past, TensorProto.FLOAT, ["batch", 2, "past", 8]))
            if layer == drop_present:
                continue
            outputs.append(helper.make_tensor_value_info(present, TensorProto.FLOAT, ["batch", 2, "total", 8]))
            nodes.append(helper.make_node("Identity", [past], [present]))
    model = helper.make_model(
        helper.make_graph(nodes, "toy", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)], ir_version=9
    )
    onnx.save(model, path)
    return ExportInfo(path=path.parent, alias="toy", onnx_path=path, context_length=64, eos_token_ids=(0,))


def test_past_inputs_pair_with_present_outputs_in_layer_order(tmp_path: Path) -> None:
    model = OnnxCausalLM(_toy_graph(tmp_path / "toy.onnx", layers=11, position_ids=True), CPU_ONE_THREAD)
    pairs = [(slot.past_name, slot.present_name) for slot in model.cache_slots]
    expected = [
        (f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}")
        for layer in range(11)
        for kind in ("key", "value")
    ]
    assert pairs == expected  # layer 10 after layer 9, not after layer 1
    assert {slot.empty_shape for slot in model.cache_slots} == {(1, 2, 0, 8)}
    assert model.has_position_ids


def test_a_graph_without_position_ids_is_fed_without_them(tmp_path: Path) -> None:
    model = OnnxCausalLM(_toy_graph(tmp_path / "toy.onnx", layers=1, position_ids=False), CPU_ONE_THREAD)
    assert not model.has_position_ids


def test_a_past_input_without_its_present_output_is_refused(tmp_path: Path) -> None:
    info = _toy_graph(tmp_path / "toy.onnx", layers=2, position_ids=True, drop_present=1)
    with pytest.raises(InferenceError) as caught:
        OnnxCausalLM(info, CPU_ONE_THREAD)
    assert caught.value.generic_code == "MODEL_LOAD_FAILED"
    assert "present.1.key" in caught.value.message


def test_the_tiny_export_layout(tiny_export: Path) -> None:
    model = OnnxCausalLM.open(tiny_export, CPU_ONE_THREAD)
    assert [slot.present_name for slot in model.cache_slots] == [
        "present.0.key",
        "present.0.value",
        "present.1.key",
        "present.1.value",
    ]
    assert model.has_position_ids
    assert model.context_length == 512
    assert model.provider == "CPUExecutionProvider"
