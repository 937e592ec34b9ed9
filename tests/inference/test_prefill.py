"""A long prompt is fed in pieces (so other requests and cancellation get a turn) without changing the reply."""

from __future__ import annotations

import pytest

import inference.run
from inference import ChatModel, GenerationParams
from tests.inference.conftest import PROMPTS

PARAMS = GenerationParams(max_new_tokens=16, temperature=0, stop_token_ids=())


def test_a_prompt_fed_in_pieces_gives_the_same_tokens(tiny_model: ChatModel, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = tiny_model.tokenizer.encode_chat(PROMPTS[2])
    whole = tiny_model.generate(prompt, PARAMS)
    monkeypatch.setattr(inference.run, "PREFILL_CHUNK", 4)
    run = tiny_model.start(prompt, PARAMS)
    prefill_steps = 0
    while not run.generator.generated:
        run.step()
        prefill_steps += 1
    assert prefill_steps == 1 + (len(prompt) - 1) // 4  # the pieces, then the step that picks a token
    pieces = list(run.events())
    assert run.result is not None
    assert run.result.token_ids == whole.token_ids
    assert run.result.usage.prompt_tokens == len(prompt)
    assert pieces[-1] is run.result


def test_cancelling_during_a_long_prompt_stops_before_the_first_token(
    tiny_model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference.run, "PREFILL_CHUNK", 4)
    run = tiny_model.start(tiny_model.tokenizer.encode_chat(PROMPTS[2]), PARAMS)
    assert run.step() == []
    run.cancel()
    events = run.step()
    assert run.result is not None
    assert events == [run.result]
    assert run.result.finish_reason == "cancelled"
    assert run.result.usage.completion_tokens == 0
