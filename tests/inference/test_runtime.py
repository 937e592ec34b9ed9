"""Execution providers (one probe, one log line, CPU without a GPU) and the quantized exports."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from inference import ChatModel, GenerationParams, InferenceError, OnnxCausalLM, RuntimeOptions, execution
from tests.inference.conftest import CPU_ONE_THREAD, PROMPTS


@pytest.fixture
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execution, "_cuda_usable", None)
    monkeypatch.setattr(execution, "_logged", set())


def test_auto_chooses_cpu_without_a_gpu_with_one_quiet_log_line(
    fresh_probe: None, tiny_export: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    if execution.cuda_usable():
        pytest.skip("this machine has a usable GPU")
    execution._cuda_usable = None
    capfd.readouterr()
    caplog.set_level(logging.DEBUG, logger="inference.execution")
    first = OnnxCausalLM.open(tiny_export, RuntimeOptions(execution_provider="auto"))
    second = OnnxCausalLM.open(tiny_export, RuntimeOptions(execution_provider="auto"))
    assert first.provider == second.provider == "CPUExecutionProvider"
    assert first.device == "cpu"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and r.name == "inference.execution"]
    assert len(lines) == 1
    assert "CPUExecutionProvider" in lines[0]
    assert "no usable CUDA device" in lines[0]
    assert first.provider_note == lines[0]
    err = capfd.readouterr().err
    assert "CUDA" not in err
    assert "onnxruntime" not in err.lower()


def test_asking_for_cuda_without_a_gpu_says_what_to_do(fresh_probe: None) -> None:
    if execution.cuda_usable():
        pytest.skip("this machine has a usable GPU")
    with pytest.raises(InferenceError) as caught:
        execution.resolve_provider("cuda")
    assert caught.value.generic_code == "INVALID_REQUEST"
    assert "auto" in caught.value.message


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (RuntimeOptions(execution_provider="tpu"), "execution_provider"),  # type: ignore[arg-type]
        (RuntimeOptions(graph_optimization="max"), "graph_optimization"),
        (RuntimeOptions(intra_op_num_threads=-1), "thread"),
    ],
)
def test_bad_runtime_settings_are_refused(tiny_export: Path, options: RuntimeOptions, field: str) -> None:
    with pytest.raises(InferenceError) as caught:
        OnnxCausalLM.open(tiny_export, options)
    assert field in caught.value.message


def test_thread_count_and_optimization_level_are_applied() -> None:
    options = execution.session_options(RuntimeOptions(intra_op_num_threads=2, graph_optimization="basic"))
    assert options.intra_op_num_threads == 2
    assert options.graph_optimization_level == execution.ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


@pytest.mark.parametrize("fixture", ["tiny_export_int8", "tiny_export_int4"])
def test_quantized_exports_generate(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    model = ChatModel.load(folder, CPU_ONE_THREAD)
    try:
        params = GenerationParams(max_new_tokens=16, temperature=0, stop_token_ids=())
        result = model.generate_chat(PROMPTS[0], params)
        assert result.finish_reason == "length"
        assert len(result.token_ids) == 16
        assert model.generate_chat(PROMPTS[0], params).token_ids == result.token_ids
    finally:
        model.close()
