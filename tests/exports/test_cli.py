"""`beth-chat export` and `beth-chat models list` end to end through the click command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import main


@pytest.fixture
def data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BETH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HF_MODELS_DIR", raising=False)
    return tmp_path / "data" / "models"


def test_export_then_list(data_env: Path, tiny_hf_model: Path) -> None:
    runner = CliRunner()
    exported = runner.invoke(
        main, ["export", str(tiny_hf_model), "--name", "cli-tiny", "--quantize", "int4", "--min-agreement", "0"]
    )
    assert exported.exit_code == 0, exported.output
    assert (data_env / "cli-tiny" / "manifest.json").is_file()

    listed = runner.invoke(main, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    models = json.loads(listed.output)["models"]
    assert [(model["alias"], model["quantization"]) for model in models] == [("cli-tiny", "int4")]


def test_export_refusal_exits_non_zero(data_env: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(tmp_path / "nothing-here")])
    assert result.exit_code == 2
    assert "EXPORT_SOURCE_NOT_FOUND" in result.output
    assert not data_env.exists() or not any(data_env.iterdir())
