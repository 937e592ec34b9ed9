"""The terminal side: exit codes, the refusal message, the summary and `models list`."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from exports.command import run_export, run_models_list
from exports.manifest import read_manifest, write_manifest


def _console() -> Console:
    return Console(record=True, width=160, force_terminal=False)


def test_export_prints_steps_and_a_summary(tmp_path: Path, tiny_hf_model: Path) -> None:
    console = _console()
    code = run_export(
        str(tiny_hf_model),
        models_dir=tmp_path,
        alias="cli-tiny",
        quantize="none",
        force=False,
        max_logit_diff=None,
        min_agreement=None,
        console=console,
    )
    text = console.export_text()
    assert code == 0
    assert "Exporting to ONNX" in text
    assert "Validating ONNX against PyTorch" in text
    assert "Exported cli-tiny" in text
    assert "max |Δlogit|" in text
    assert read_manifest(tmp_path / "cli-tiny").alias == "cli-tiny"


def test_refused_export_exits_non_zero_and_says_why(tmp_path: Path) -> None:
    console = _console()
    code = run_export(
        str(tmp_path / "missing"),
        models_dir=tmp_path / "models",
        alias=None,
        quantize="none",
        force=False,
        max_logit_diff=None,
        min_agreement=None,
        console=console,
    )
    text = console.export_text()
    assert code == 2
    assert "EXPORT_SOURCE_NOT_FOUND" in text
    assert "Nothing was written" in text
    assert not (tmp_path / "models").exists()


@pytest.fixture
def listed_models(tmp_path: Path, tiny_export: Path, tiny_export_int4: Path) -> Path:
    for folder in (tiny_export, tiny_export_int4):
        copy = tmp_path / folder.name
        copy.mkdir()
        write_manifest(copy, read_manifest(folder))
    (tmp_path / "junk").mkdir()
    return tmp_path


def test_models_list_shows_a_table(listed_models: Path) -> None:
    console = _console()
    assert run_models_list(listed_models, console=console) == 0
    text = console.export_text()
    for expected in ("tiny", "tiny-int4", "int4", "text", "Δlogit", "top-1", "not an export", "junk"):
        assert expected in text


def test_models_list_as_json(listed_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_models_list(listed_models, as_json=True) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [model["alias"] for model in payload["models"]] == ["tiny", "tiny-int4"]
    assert payload["models"][1]["quantization"] == "int4"
    assert payload["broken"][0]["path"].endswith("junk")


def test_models_list_of_an_empty_folder_says_how_to_export(tmp_path: Path) -> None:
    console = _console()
    assert run_models_list(tmp_path, console=console) == 0
    assert "beth-chat export default" in console.export_text()


def test_models_list_never_shortens_an_alias_in_80_columns(tmp_path: Path, tiny_export: Path) -> None:
    aliases = ("SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct-fp16", "SmolLM2-135M-Instruct-int4")
    for alias in aliases:
        folder = tmp_path / alias
        folder.mkdir()
        write_manifest(folder, msgspec.structs.replace(read_manifest(tiny_export), alias=alias))
    console = Console(record=True, width=80, force_terminal=False)
    assert run_models_list(tmp_path, console=console) == 0
    lines = console.export_text().splitlines()
    for alias in aliases:
        assert any(line.split() and line.split()[0] == alias for line in lines), alias
