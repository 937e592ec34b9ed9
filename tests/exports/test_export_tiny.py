"""Exports of the tiny model: the folder layout the engine reads, the manifest, and the validation figures."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from exports.export import export_model
from exports.hashing import sha256_file
from exports.manifest import read_manifest
from tests.fixtures.models import TINY_EOS_IDS

ENGINE_FILES = ("model.onnx", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def _graph(folder: Path) -> onnx.ModelProto:
    return onnx.load(str(folder / read_manifest(folder).onnx_file), load_external_data=False)


def test_export_folder_holds_everything_the_engine_opens(tiny_export: Path) -> None:
    names = {path.name for path in tiny_export.iterdir()}
    assert set(ENGINE_FILES) | {"manifest.json"} <= names
    assert not [name for name in names if name.startswith(".")]


def test_graph_has_past_key_values_in_and_present_out(tiny_export: Path) -> None:
    graph = _graph(tiny_export).graph
    inputs = [item.name for item in graph.input]
    outputs = [item.name for item in graph.output]
    assert inputs[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert {f"past_key_values.{layer}.{kind}" for layer in (0, 1) for kind in ("key", "value")} <= set(inputs)
    assert outputs[0] == "logits"
    assert {f"present.{layer}.{kind}" for layer in (0, 1) for kind in ("key", "value")} <= set(outputs)


def test_manifest_describes_the_model(tiny_export: Path, tiny_hf_model: Path) -> None:
    manifest = read_manifest(tiny_export)
    assert manifest.alias == "tiny"
    assert manifest.source.kind == "folder"
    assert manifest.source.value == str(tiny_hf_model.resolve())
    assert manifest.source.sha256 is None
    assert manifest.architecture == "LlamaForCausalLM"
    assert manifest.model_type == "llama"
    assert 50_000 < manifest.parameter_count < 200_000
    assert manifest.context_length == 512
    assert manifest.eos_token_ids == list(TINY_EOS_IDS)
    assert manifest.chat_template is True
    assert manifest.capabilities.text
    assert not manifest.capabilities.vision
    assert manifest.quantization == "none"
    assert manifest.onnx_file == "model.onnx"
    assert manifest.versions.transformers
    assert manifest.versions.optimum
    assert manifest.versions.onnxruntime
    assert manifest.versions.torch
    assert manifest.created_at.endswith("+00:00")


def test_manifest_lists_every_file_with_its_hash(tiny_export: Path) -> None:
    manifest = read_manifest(tiny_export)
    on_disk = sorted(path.name for path in tiny_export.iterdir() if path.name != "manifest.json")
    assert [entry.name for entry in manifest.files] == on_disk
    for entry in manifest.files:
        assert entry.size == (tiny_export / entry.name).stat().st_size
        assert entry.sha256 == sha256_file(tiny_export / entry.name)


def test_generation_config_lists_every_stop_id(tiny_export: Path) -> None:
    generation = json.loads((tiny_export / "generation_config.json").read_text())
    assert generation["eos_token_id"] == list(TINY_EOS_IDS)


def test_validation_figures_are_recorded(tiny_export: Path) -> None:
    validation = read_manifest(tiny_export).validation
    assert validation.passed
    assert validation.prompts == 8
    assert 0 <= validation.max_abs_logit_diff < 1e-4
    assert validation.max_abs_logit_diff <= validation.max_logit_diff_threshold
    assert validation.decode_steps == validation.compared_tokens == 8 * 12
    assert validation.min_agreement_threshold is None
    assert validation.quantized_max_abs_logit_diff is None


@pytest.mark.parametrize(
    ("fixture", "mode", "op_type"),
    [("tiny_export_int8", "int8", "MatMulInteger"), ("tiny_export_int4", "int4", "MatMulNBits")],
)
def test_quantized_exports_replace_the_graph(
    request: pytest.FixtureRequest, tiny_export: Path, fixture: str, mode: str, op_type: str
) -> None:
    folder: Path = request.getfixturevalue(fixture)
    manifest = read_manifest(folder)
    assert manifest.quantization == mode
    assert manifest.onnx_file == "model.onnx"
    assert op_type in {node.op_type for node in _graph(folder).graph.node}
    assert (folder / "model.onnx").stat().st_size < (tiny_export / "model.onnx").stat().st_size
    validation = manifest.validation
    assert validation.top1_agreement is not None
    assert 0 <= validation.top1_agreement <= 1
    assert validation.compared_tokens == 8 * 12
    assert validation.quantized_max_abs_logit_diff is not None
    assert validation.min_agreement_threshold == 0.0


def test_force_replaces_an_existing_export(tmp_path: Path, tiny_hf_model: Path) -> None:
    models_dir = tmp_path / "models"
    first = export_model(str(tiny_hf_model), models_dir=models_dir, alias="again")
    (models_dir / "again" / "stale.txt").write_text("from before")
    second = export_model(str(tiny_hf_model), models_dir=models_dir, alias="again", force=True)
    assert second.created_at >= first.created_at
    assert not (models_dir / "again" / "stale.txt").exists()
    assert [path.name for path in models_dir.iterdir()] == ["again"]
    assert read_manifest(models_dir / "again") == second


def test_default_alias_is_the_folder_name_with_the_quantization(tmp_path: Path, tiny_hf_model: Path) -> None:
    manifest = export_model(str(tiny_hf_model), models_dir=tmp_path, quantize="int4", min_agreement=0.0)
    assert manifest.alias == "tiny-llama-int4"
    assert (tmp_path / "tiny-llama-int4" / "manifest.json").is_file()


def test_each_layer_attends_with_one_group_query_attention_node_that_applies_rotary(tiny_export: Path) -> None:
    assert "group-query-attention" in read_manifest(tiny_export).graph_rewrites
    nodes = _graph(tiny_export).graph.node
    attention = [node for node in nodes if node.op_type == "GroupQueryAttention"]
    assert [list(node.output)[1:] for node in attention] == [
        [f"present.{layer}.key", f"present.{layer}.value"] for layer in (0, 1)
    ]
    for node in attention:
        attributes = {item.name: onnx.helper.get_attribute_value(item) for item in node.attribute}
        assert attributes["do_rotary"] == 1
        assert (attributes["num_heads"], attributes["kv_num_heads"]) == (4, 2)
    # Optimum's per-layer attention subgraph (mask, softmax, repeated cache, separate rotary) is gone
    assert not {"Softmax", "Expand", "RotaryEmbedding"} & {node.op_type for node in nodes}


def test_prefill_returns_the_last_positions_logits_only(tiny_export: Path, tiny_hf_model: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForCausalLM

    session = ort.InferenceSession(str(tiny_export / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = [[5, 17, 42, 99, 7, 3]]
    feeds = {
        "input_ids": np.array(ids, dtype=np.int64),
        "attention_mask": np.ones((1, 6), dtype=np.int64),
        "position_ids": np.arange(6, dtype=np.int64)[None, :],
    }
    for item in session.get_inputs():
        if item.name.startswith("past_key_values."):
            feeds[item.name] = np.zeros((1, item.shape[1], 0, item.shape[3]), dtype=np.float32)
    logits = session.run(["logits"], feeds)[0]
    torch_model = AutoModelForCausalLM.from_pretrained(tiny_hf_model, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = torch_model(torch.tensor(ids)).logits[:, -1:].numpy()
    assert logits.shape == expected.shape == (1, 1, torch_model.config.vocab_size)
    assert np.abs(logits - expected).max() < 1e-4
    # the engine asks for more positions when it checks drafted tokens
    every = session.run(["logits"], {**feeds, "logits_to_keep": np.array([6], dtype=np.int64)})[0]
    with torch.no_grad():
        assert np.abs(every - torch_model(torch.tensor(ids)).logits.numpy()).max() < 1e-4


def test_int4_quantizes_the_vocabulary_projection_too(tiny_export_int4: Path) -> None:
    producer = next(node for node in _graph(tiny_export_int4).graph.node if "logits" in node.output)
    assert producer.op_type == "MatMulNBits"
    assert "logits_to_keep" in {item.name for item in _graph(tiny_export_int4).graph.input}


def _one_matmul_per_attention_and_mlp(model: onnx.ModelProto, matmul: str) -> None:
    nodes = model.graph.node
    producers = {output: node for node in nodes for output in node.output}
    attention = [node for node in nodes if node.op_type == "GroupQueryAttention"]
    assert len(attention) == 2
    for node in attention:  # packed form: query holds q, k and v; key and value are empty
        assert producers[node.input[0]].op_type == matmul
        assert list(node.input[1:3]) == ["", ""]
    splits = [node for node in nodes if node.op_type == "Split"]
    assert [producers[node.input[0]].op_type for node in splits] == [matmul, matmul]
    assert not [node for node in nodes if "/gate_proj/" in node.name or "/up_proj/" in node.name]
    assert len([node for node in nodes if node.op_type == matmul]) == 2 * 4 + 1  # qkv, o, gate/up, down; lm_head


def test_each_layer_projects_q_k_v_and_gate_up_with_one_matmul(tiny_export: Path) -> None:
    _one_matmul_per_attention_and_mlp(_graph(tiny_export), "MatMul")


def test_int4_quantizes_the_packed_projections(tiny_export_int4: Path) -> None:
    _one_matmul_per_attention_and_mlp(_graph(tiny_export_int4), "MatMulNBits")


def test_int8_keeps_the_projections_apart(tiny_export_int8: Path) -> None:
    attention = [node for node in _graph(tiny_export_int8).graph.node if node.op_type == "GroupQueryAttention"]
    assert len(attention) == 2
    assert all(node.input[1] and node.input[2] for node in attention)  # one int8 weight scale per projection
