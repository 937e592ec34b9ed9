"""The tiny model fixture keeps the promises other tests rely on: UTF-8 round trips, a template, two stop ids."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from tests.fixtures.models import TINY_EOS_IDS, build_tiny_llama


def test_tiny_tokenizer_round_trips_multibyte_text(tiny_hf_model: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_hf_model / "tokenizer.json"))
    text = "Grüße aus München, 日本語, emoji 🙂 and a rare one: ꙮ"
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text
    assert len(tokenizer.get_vocab()) < 400


def test_tiny_model_has_a_chat_template_and_two_stop_ids(tiny_hf_model: Path) -> None:
    tokenizer_config = json.loads((tiny_hf_model / "tokenizer_config.json").read_text())
    template = tokenizer_config.get("chat_template") or (tiny_hf_model / "chat_template.jinja").read_text()
    assert "<|im_start|>" in template
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    generation = json.loads((tiny_hf_model / "generation_config.json").read_text())
    assert generation["eos_token_id"] == list(TINY_EOS_IDS)


def test_build_is_deterministic(tmp_path: Path, tiny_hf_model: Path) -> None:
    again = build_tiny_llama(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (tiny_hf_model / name).read_bytes()
