"""Greedy output equals transformers' PyTorch `generate`, token for token, on the tiny and the default model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from inference import ChatModel, GenerationParams
from tests.inference.conftest import CPU_ONE_THREAD, PROMPTS

DEFAULT_PROMPTS = (
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "system", "content": "You are concise."}, {"role": "user", "content": "Name three colours."}],
)


def _torch_greedy(model: Any, prompt_ids: Sequence[int], max_new_tokens: int) -> list[int]:
    import torch

    with torch.no_grad():
        output = model.generate(
            torch.tensor([list(prompt_ids)]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=max_new_tokens,
        )
    return output[0, len(prompt_ids) :].tolist()


def _check_parity(
    chat: ChatModel, torch_model: Any, prompts: Sequence[list[dict[str, Any]]], max_new_tokens: int
) -> None:
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0)
    for messages in prompts:
        prompt_ids = chat.tokenizer.encode_chat(messages)
        ours = chat.generate(prompt_ids, params).token_ids
        assert ours == _torch_greedy(torch_model, prompt_ids, max_new_tokens), messages


def test_tiny_model_greedy_matches_transformers(tiny_model: ChatModel, tiny_hf_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    torch_model = AutoModelForCausalLM.from_pretrained(tiny_hf_model, dtype=torch.float32).eval()
    _check_parity(tiny_model, torch_model, PROMPTS, max_new_tokens=32)


@pytest.mark.slow
def test_default_model_greedy_matches_transformers(default_export: Path) -> None:
    # transformers runs the dequantized GGUF the export was made from (loaded the way the export loads it)
    from exports.loading import load_source
    from exports.sources import resolve_source

    torch_model = load_source(resolve_source("default")).model
    chat = ChatModel.load(default_export, CPU_ONE_THREAD)
    try:
        _check_parity(chat, torch_model, DEFAULT_PROMPTS, max_new_tokens=32)
    finally:
        chat.close()
