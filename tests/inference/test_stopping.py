"""Stop token ids, stop strings on a real model, the length limit, the context check and UTF-8-safe streaming.

The stop-string filter on its own is tested in test_stop_strings.py."""

from __future__ import annotations

import pytest

from inference import ChatModel, GenerationParams, InferenceError, TextDelta
from tests.fixtures.models import TINY_EOS_IDS
from tests.inference.conftest import GREEDY, PROMPTS

MULTI_BYTE = "Grüße aus München: ça va? 日本語のテキスト, emoji 🙂🚀."


def test_the_tiny_model_stops_on_either_of_its_eos_ids(tiny_model: ChatModel) -> None:
    assert set(tiny_model.model.eos_token_ids) == set(TINY_EOS_IDS)
    unstopped = tiny_model.generate_chat(
        PROMPTS[0], GenerationParams(max_new_tokens=40, temperature=0, stop_token_ids=())
    ).token_ids
    for eos in TINY_EOS_IDS:
        # make `eos` stand for the third greedy token: generation must end right there, with reason stop
        params = GenerationParams(max_new_tokens=40, temperature=0, stop_token_ids=(eos, unstopped[2]))
        result = tiny_model.generate_chat(PROMPTS[0], params)
        assert result.finish_reason == "stop"
        assert result.token_ids == unstopped[:3]
    default = tiny_model.generate_chat(PROMPTS[0], GenerationParams(max_new_tokens=40, temperature=0))
    stops = [i for i, token in enumerate(unstopped) if token in TINY_EOS_IDS]
    expected = unstopped[: stops[0] + 1] if stops else unstopped
    assert default.token_ids == expected


def test_a_stop_token_is_never_text(tiny_model: ChatModel) -> None:
    unstopped = tiny_model.generate_chat(
        PROMPTS[0], GenerationParams(max_new_tokens=40, temperature=0, stop_token_ids=())
    )
    stop = unstopped.token_ids[5]
    result = tiny_model.generate_chat(
        PROMPTS[0], GenerationParams(max_new_tokens=40, temperature=0, stop_token_ids=(stop,))
    )
    assert result.text == tiny_model.tokenizer.decode(result.token_ids[:-1])


def test_stop_strings_end_generation_and_are_never_emitted(tiny_model: ChatModel) -> None:
    # seeded sampling: the tiny model's greedy text is too short to hold a stop string
    options = {"max_new_tokens": 40, "temperature": 1.0, "seed": 1, "stop_token_ids": ()}
    free = tiny_model.generate_chat(PROMPTS[0], GenerationParams(**options))  # type: ignore[arg-type]
    stop = next(free.text[i : i + 3] for i in range(4, len(free.text) - 3) if free.text[i : i + 3].isprintable())
    params = GenerationParams(**options, stop_strings=(stop,))  # type: ignore[arg-type]
    run = tiny_model.start_chat(PROMPTS[0], params)
    events = list(run.events())
    streamed = "".join(event.text for event in events if isinstance(event, TextDelta))
    result = run.result
    assert result is not None
    assert result.finish_reason == "stop"
    assert stop not in streamed
    assert stop not in result.text
    assert streamed == result.text == free.text[: free.text.index(stop)]
    assert len(result.token_ids) < len(free.token_ids)


def test_max_new_tokens_ends_with_length(tiny_model: ChatModel) -> None:
    result = tiny_model.generate_chat(PROMPTS[2], GenerationParams(max_new_tokens=5, temperature=0, stop_token_ids=()))
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == len(result.token_ids) == 5


def test_streamed_text_never_splits_a_utf8_character(tiny_model: ChatModel) -> None:
    ids = tiny_model.tokenizer.encode(MULTI_BYTE)
    assert tiny_model.tokenizer.decode(ids) == MULTI_BYTE
    pieces = [tiny_model.tokenizer.decode([token]) for token in ids]
    assert any("\ufffd" in piece for piece in pieces)  # the tokenizer does split characters across tokens
    stream = tiny_model.tokenizer.stream()
    deltas = [stream.push(token) for token in ids]
    assert all("\ufffd" not in delta for delta in deltas)
    assert "".join(deltas) == MULTI_BYTE


def test_a_prompt_that_cannot_fit_the_context_is_refused(tiny_model: ChatModel) -> None:
    messages = [{"role": "user", "content": "Hello world! " * 60}]
    prompt_tokens = tiny_model.count_chat_tokens(messages)
    assert prompt_tokens < tiny_model.context_length
    fits = GenerationParams(max_new_tokens=tiny_model.context_length - prompt_tokens, temperature=0)
    tiny_model.start_chat(messages, fits)  # exactly full: accepted
    too_many = GenerationParams(max_new_tokens=tiny_model.context_length - prompt_tokens + 1, temperature=0)
    with pytest.raises(InferenceError) as caught:
        tiny_model.start_chat(messages, too_many)
    assert caught.value.generic_code == "CONTEXT_LENGTH_EXCEEDED"
    assert caught.value.details["prompt_tokens"] == prompt_tokens
    assert caught.value.details["context_length"] == tiny_model.context_length


def test_prompt_tokens_are_counted_from_the_chat_template(tiny_model: ChatModel) -> None:
    rendered = tiny_model.tokenizer.render_chat(PROMPTS[0])
    assert rendered == "<|im_start|>user\nHello world! How are you today?<|im_end|>\n<|im_start|>assistant\n"
    result = tiny_model.generate_chat(PROMPTS[0], GREEDY)
    assert result.usage.prompt_tokens == tiny_model.count_chat_tokens(PROMPTS[0])
