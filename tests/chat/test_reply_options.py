"""A turn's `options` change the reply as documented, over the model's configuration, on every chat surface
(REST, GraphQL `addMessage(options:)`, the legacy stream route's JSON or form field); bad options are refused at
the boundary by one rule set, with nothing saved."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
import pytest

from tests.api.test_bad_input import assert_error
from tests.api.test_graphql_web_client import create_conversation
from tests.chat.test_stream_turn import stored
from tests.fixtures.server import graphql
from tests.fixtures.web_client import stream_message

MODEL = "hf/tiny"
PROMPT = "Hello world! How are you today?"

SEND_WITH_OPTIONS = """
mutation SendMessage($input: AddMessageInput!, $options: GenerationOptionsInput) {
  addMessage(input: $input, options: $options) { llmMessage { id text } error }
}"""


def reply(chat: httpx.Client, conversation_id: str, **options: Any) -> dict:
    body = {"text": PROMPT, "reply": True, "options": options}
    response = chat.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["error"] is None, answer
    return answer["reply"]


def send_graphql(chat: httpx.Client, conversation_id: str, options: Any) -> dict:
    message = {"conversationId": conversation_id, "text": PROMPT, "sender": "user"}
    return graphql(chat, SEND_WITH_OPTIONS, {"input": message, "options": options})


def graphql_reply(chat: httpx.Client, conversation_id: str, **options: Any) -> dict:
    """GraphQL's reply, as stored (REST shows its usage and finish reason, which GraphQL's Message lacks)."""
    answer = send_graphql(chat, conversation_id, options)
    assert "errors" not in answer, answer
    assert answer["data"]["addMessage"]["error"] is None, answer
    saved = stored(chat, conversation_id)[-1]
    assert saved["text"] == answer["data"]["addMessage"]["llmMessage"]["text"]
    return saved


def legacy_reply(chat: httpx.Client, conversation_id: str, *, multipart: bool = False, **options: Any) -> dict:
    """The legacy route's reply, as stored; `options` in the JSON body, or as a form's JSON text."""
    seen = stream_message(
        chat, model=MODEL, message=PROMPT, conversation_id=conversation_id, options=options, multipart=multipart
    )
    assert seen.ended, seen.raw
    saved = stored(chat, conversation_id)[-1]
    assert saved["text"] == "".join(seen.tokens)
    return saved


BAD_OPTIONS = [
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
]

Surface = Callable[..., dict]
SURFACES = [
    pytest.param(reply, id="rest"),
    pytest.param(graphql_reply, id="graphql"),
    pytest.param(legacy_reply, id="legacy-json"),
    pytest.param(partial(legacy_reply, multipart=True), id="legacy-form"),
]


@pytest.fixture
def conversation_id(chat: httpx.Client) -> str:
    return create_conversation(chat, model=MODEL)


def first_reply(chat: httpx.Client, surface: Surface = reply, **options: Any) -> str:
    """The reply to the same first message of a new conversation, so only the options differ."""
    return surface(chat, create_conversation(chat, model=MODEL), **options)["text"]


@pytest.mark.parametrize("surface", SURFACES)
def test_seed_and_temperature_choose_the_sampled_reply(chat: httpx.Client, surface: Surface) -> None:
    first = first_reply(chat, surface, temperature=1.5, seed=1, maxTokens=16)
    again = first_reply(chat, surface, temperature=1.5, seed=1, maxTokens=16)
    other_seed = first_reply(chat, surface, temperature=1.5, seed=2, maxTokens=16)
    greedy = first_reply(chat, surface, temperature=0, seed=1, maxTokens=16)
    assert first == again
    assert len({first, other_seed, greedy}) == 3


@pytest.mark.parametrize("surface", SURFACES)
def test_max_tokens_caps_the_reply(chat: httpx.Client, conversation_id: str, surface: Surface) -> None:
    capped = surface(chat, conversation_id, temperature=0, maxTokens=3)
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


@pytest.mark.parametrize("options", BAD_OPTIONS)
def test_bad_options_are_400_and_store_nothing(chat: httpx.Client, conversation_id: str, options: Any) -> None:
    before = stored(chat, conversation_id)
    body = {"text": "hi", "reply": True, "options": options}
    response = chat.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)
    assert_error(response, 400, "INVALID_REQUEST")
    assert stored(chat, conversation_id) == before


# GraphQL takes a lone string for a list of strings, as its input coercion says
@pytest.mark.parametrize("options", [p for p in BAD_OPTIONS if p.id != "stop-not-a-list"])
def test_bad_graphql_options_are_coded_errors_and_store_nothing(
    chat: httpx.Client, conversation_id: str, options: Any
) -> None:
    answer = send_graphql(chat, conversation_id, options)
    assert answer["errors"][0]["extensions"]["code"] == "INVALID_REQUEST", answer
    assert stored(chat, conversation_id) == []


def test_a_graphql_options_error_names_the_option(chat: httpx.Client, conversation_id: str) -> None:
    answer = send_graphql(chat, conversation_id, {"topP": 1.5})
    assert answer["errors"][0]["message"] == "Invalid options: Expected `float` <= 1.0 - at `options.topP`"


@pytest.mark.parametrize("multipart", [False, True], ids=["json", "form"])
@pytest.mark.parametrize("options", [*BAD_OPTIONS, pytest.param("{not json", id="not-json")])
def test_bad_legacy_options_are_an_error_event_and_store_nothing(
    chat: httpx.Client, conversation_id: str, options: Any, multipart: bool
) -> None:
    seen = stream_message(
        chat, model=MODEL, message="hi", conversation_id=conversation_id, options=options, multipart=multipart
    )
    assert seen.error_payload is not None, seen.raw
    assert seen.error_payload["code"] == "INVALID_REQUEST"
    assert seen.error is not None
    assert seen.error.startswith("Invalid options")
    assert stored(chat, conversation_id) == []
