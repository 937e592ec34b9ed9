"""Which provider and model answered: on every stored reply, in GraphQL and REST, and in the legacy `end` event.

The server's Ollama lists its models but answers 503 to every chat, and `FALLBACK_MODELS` is the tiny hf
model (greedy, so its replies do not depend on a draw): a turn on `hf/tiny` is answered by it directly, a
turn on `llama3.1:8b` by it as the fallback. The server has a database of its own, so the stored model records
(and their `lastUsedAt`) are this module's alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_graphql_web_client import create_conversation
from tests.chat.conftest import chat_env
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, graphql, running
from tests.fixtures.web_client import stream_message

TINY = "hf/tiny"
DEFAULT = "hf/SmolLM2-135M-Instruct"
ASKED = "llama3.1:8b"

MESSAGES = """
query($conversationId: String!) {
  messages(conversationId: $conversationId) { sender text provider model fallbackFrom }
}"""
CONVERSATION = "query($id: String!) { conversation(id: $id) { id llmModel provider model } }"
CONVERSATIONS = "{ conversations { conversations { id provider model } } }"
ADD_MESSAGE = """
mutation($input: AddMessageInput!) {
  addMessage(input: $input) { llmModel error errorCode llmMessage { text provider model fallbackFrom } }
}"""


@pytest.fixture(scope="module")
def fallback_server(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory, chat_models_dir: Path
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("reply-provider")
    config = folder / "beth.toml"
    config.write_text(f'[models."{TINY}".options]\ntemperature = 0\n')
    with FakeOllama(mode="busy") as busy:
        env = chat_env(
            busy,
            chat_models_dir,
            BETH_CONFIG=str(config),
            FALLBACK_MODELS=TINY,
            PROVIDER_RETRIES="0",
            SYSTEM_PROMPT="Be brief.",
        )
        with running(ServerProcess(folder, module_database_url, env)) as process:
            yield process


@pytest.fixture
def client(fallback_server: ServerProcess) -> Iterator[httpx.Client]:
    with fallback_server.client(timeout=60) as http:
        yield http


def rest_conversation(client: httpx.Client, conversation_id: str) -> dict:
    response = client.get(f"/api/v1/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    return response.json()


def rest_listed(client: httpx.Client, conversation_id: str) -> dict:
    listing = client.get("/api/v1/conversations", params={"limit": 200}).json()["conversations"]
    return next(c for c in listing if c["id"] == conversation_id)


def replies(client: httpx.Client, conversation_id: str) -> list[dict]:
    response = client.get(f"/api/v1/conversations/{conversation_id}/messages")
    assert response.status_code == 200, response.text
    return [m for m in response.json()["messages"] if m["sender"] == "llm"]


def test_a_reply_names_the_provider_and_model_that_answered(client: httpx.Client) -> None:
    conversation_id = create_conversation(client, model=TINY)
    # before any reply the conversation names none (its chosen model is `llmModel`)
    before = graphql(client, CONVERSATION, {"id": conversation_id})["data"]["conversation"]
    assert (before["llmModel"], before["provider"], before["model"]) == (TINY, None, None)
    assert (
        rest_conversation(client, conversation_id)["provider"],
        rest_conversation(client, conversation_id)["model"],
    ) == (None, None)

    seen = stream_message(client, model=TINY, message="Hello world!", conversation_id=conversation_id)
    # the old client's parsing of the end event still ends the stream; the event now says who answered
    assert seen.ended, seen.raw
    assert seen.error is None, seen.raw
    assert seen.terminated is None
    assert seen.text
    assert seen.end == {"provider": "hf", "model": TINY, "fallbackFrom": None}

    messages = graphql(client, MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert [(m["sender"], m["provider"], m["model"], m["fallbackFrom"]) for m in messages] == [
        ("user", None, None, None),
        ("llm", "hf", TINY, None),
    ]
    assert messages[1]["text"] == seen.text
    conversation = graphql(client, CONVERSATION, {"id": conversation_id})["data"]["conversation"]
    assert (conversation["provider"], conversation["model"]) == ("hf", TINY)
    listed = graphql(client, CONVERSATIONS)["data"]["conversations"]["conversations"]
    assert {"id": conversation_id, "provider": "hf", "model": TINY} in listed

    (reply,) = replies(client, conversation_id)
    assert (reply["provider"], reply["model"], reply["fallbackFrom"]) == ("hf", TINY, None)
    for shown in (rest_conversation(client, conversation_id), rest_listed(client, conversation_id)):
        assert (shown["llmModel"], shown["provider"], shown["model"]) == (TINY, "hf", TINY)


def test_a_fallback_reply_names_the_fallback_and_the_model_asked_for(client: httpx.Client) -> None:
    conversation_id = create_conversation(client, model=ASKED)
    seen = stream_message(client, model=ASKED, message="Hello world!", conversation_id=conversation_id)
    assert seen.ended, seen.raw
    assert seen.error is None, seen.raw
    assert seen.end == {"provider": "hf", "model": TINY, "fallbackFrom": ASKED}

    added = graphql(
        client, ADD_MESSAGE, {"input": {"conversationId": conversation_id, "text": "Hello world!", "sender": "user"}}
    )["data"]["addMessage"]
    assert (added["error"], added["errorCode"]) == (None, None)
    reply = added["llmMessage"]
    assert (reply["provider"], reply["model"], reply["fallbackFrom"]) == ("hf", TINY, ASKED)

    messages = graphql(client, MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert [(m["sender"], m["provider"], m["model"], m["fallbackFrom"]) for m in messages] == [
        ("user", None, None, None),
        ("llm", "hf", TINY, ASKED),
        ("user", None, None, None),
        ("llm", "hf", TINY, ASKED),
    ]
    assert [(r["provider"], r["model"], r["fallbackFrom"]) for r in replies(client, conversation_id)] == [
        ("hf", TINY, ASKED)
    ] * 2
    # the conversation keeps the model chosen, and names the one that answered last
    conversation = graphql(client, CONVERSATION, {"id": conversation_id})["data"]["conversation"]
    assert (conversation["llmModel"], conversation["provider"], conversation["model"]) == (ASKED, "hf", TINY)
    shown = rest_conversation(client, conversation_id)
    assert (shown["llmModel"], shown["provider"], shown["model"]) == (ASKED, "hf", TINY)


def last_used(client: httpx.Client, name: str) -> str | None:
    response = client.get(f"/api/v1/model-configs/{name}")
    assert response.status_code == 200, response.text
    return response.json()["lastUsedAt"]


def test_last_used_at_is_stamped_on_the_model_that_answered(client: httpx.Client) -> None:
    ollama_name = f"ollama/{ASKED}"
    # the stored records are written when the catalog first lists the models
    wait_until(
        lambda: all(client.get(f"/api/v1/model-configs/{n}").status_code == 200 for n in (DEFAULT, ollama_name, TINY)),
        what="the models' stored records",
    )
    assert last_used(client, DEFAULT) is None  # no turn on this server asks for it but the one below
    assert last_used(client, ollama_name) is None  # its Ollama never answers here

    started_ms = int(time.time() * 1000)
    conversation_id = create_conversation(client, model=DEFAULT)
    answered = client.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"text": "Name a colour.", "reply": True, "options": {"maxTokens": 4}},
    )
    assert answered.status_code == 201, answered.text
    assert answered.json()["reply"]["model"] == DEFAULT
    stamped = last_used(client, DEFAULT)
    assert stamped is not None
    assert int(stamped) >= started_ms

    # asked for, but a fallback answered: only the fallback's record is stamped
    fallback = create_conversation(client, model=ASKED)
    seen = stream_message(client, model=ASKED, message="Hello world!", conversation_id=fallback)
    assert seen.end == {"provider": "hf", "model": TINY, "fallbackFrom": ASKED}, seen.raw
    assert last_used(client, ollama_name) is None
    tiny_used = last_used(client, TINY)
    assert tiny_used is not None
    assert int(tiny_used) >= started_ms
    # the configuration list shows the same stamps
    configs = {c["name"]: c for c in client.get("/api/v1/model-configs").json()}
    assert configs[DEFAULT]["lastUsedAt"] == stamped
    assert configs[ollama_name]["lastUsedAt"] is None
