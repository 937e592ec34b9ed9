"""A REST turn's `options` change the reply as documented, over the model's configuration; bad options are
refused at the boundary with nothing saved."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.test_bad_input import assert_error
from tests.api.test_graphql_web_client import create_conversation
from tests.chat.test_stream_turn import stored

MODEL = "hf/tiny"


def reply(chat: httpx.Client, conversation_id: str, **options: Any) -> dict:
    body = {"text": "Hello world! How are you today?", "reply": True, "options": options}
    response = chat.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["error"] is None, answer
    return answer["reply"]


@pytest.fixture
def conversation_id(chat: httpx.Client) -> str:
    return create_conversation(chat, model=MODEL)


def first_reply(chat: httpx.Client, **options: Any) -> str:
    """The reply to the same first message of a new conversation, so only the options differ."""
    return reply(chat, create_conversation(chat, model=MODEL), **options)["text"]


def test_seed_and_temperature_choose_the_sampled_reply(chat: httpx.Client) -> None:
    first = first_reply(chat, temperature=1.5, seed=1, maxTokens=16)
    again = first_reply(chat, temperature=1.5, seed=1, maxTokens=16)
    other_seed = first_reply(chat, temperature=1.5, seed=2, maxTokens=16)
    greedy = first_reply(chat, temperature=0, seed=1, maxTokens=16)
    assert first == again
    assert len({first, other_seed, greedy}) == 3


def test_max_tokens_caps_the_reply(chat: httpx.Client, conversation_id: str) -> None:
    capped = reply(chat, conversation_id, temperature=0, maxTokens=3)
    assert capped["completionTokens"] == 3
    assert capped["finishReason"] == "length"


def test_a_stop_string_ends_the_reply_before_it(chat: httpx.Client) -> None:
    text = first_reply(chat, temperature=0, maxTokens=20)
    assert len(text) > 8, text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = reply(chat, create_conversation(chat, model=MODEL), temperature=0, maxTokens=20, stop=[stop])
    assert stop not in cut["text"]
    assert text.startswith(cut["text"])
    assert len(cut["text"]) < len(text)
    assert cut["finishReason"] == "stop"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"temperature": -0.1}, id="negative-temperature"),
        pytest.param({"temperature": "hot"}, id="temperature-not-a-number"),
        pytest.param({"topP": 1.5}, id="top-p-over-1"),
        pytest.param({"topK": -1}, id="negative-top-k"),
        pytest.param({"maxTokens": 0}, id="zero-max-tokens"),
        pytest.param({"seed": -1}, id="negative-seed"),
        pytest.param({"stop": [""]}, id="empty-stop"),
        pytest.param({"stop": "x"}, id="stop-not-a-list"),
        pytest.param({"repetitionPenalty": 0}, id="zero-repetition-penalty"),
        pytest.param({"frequencyPenalty": 1}, id="unknown-option"),
        pytest.param([1], id="not-an-object"),
    ],
)
def test_bad_options_are_400_and_store_nothing(chat: httpx.Client, conversation_id: str, options: Any) -> None:
    before = stored(chat, conversation_id)
    body = {"text": "hi", "reply": True, "options": options}
    response = chat.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)
    assert_error(response, 400, "INVALID_REQUEST")
    assert stored(chat, conversation_id) == before
