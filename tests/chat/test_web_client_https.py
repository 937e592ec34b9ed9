"""The old web client's whole session against `serve --https` and the default hf model.

It talks to `https://localhost:<port>` with the generated development certificate, sends the CORS
`Origin` header of the React dev server, and runs its operations in the order a person would:
create a conversation, stream a reply, stop a reply, delete messages, delete the conversation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_graphql_web_client import (
    DELETE_CONVERSATION,
    DELETE_MESSAGES_AFTER,
    GET_AVAILABLE_MODELS,
    GET_CONVERSATIONS,
    GET_MESSAGES,
    create_conversation,
)
from tests.chat.conftest import chat_env
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess, graphql
from tests.fixtures.web_client import ClientStream, stream_message, terminate

MODEL = "hf/SmolLM2-135M-Instruct"


@pytest.fixture
def https_chat(tmp_path: Path, chat_ollama: FakeOllama, chat_models_dir: Path) -> Iterator[httpx.Client]:
    server = ServerProcess(
        tmp_path, f"sqlite:///{tmp_path / 'web.sqlite3'}", chat_env(chat_ollama, chat_models_dir, CHAT_MAX_TOKENS="48")
    )
    server.start("--https")
    cert = server.workdir / "data" / "tls" / "dev-cert.pem"
    headers = {"Origin": "http://localhost:3000"}
    with httpx.Client(
        base_url=server.url.replace("127.0.0.1", "localhost"), verify=str(cert), headers=headers, timeout=60
    ) as client:
        yield client
    server.stop()


@pytest.mark.slow
def test_the_web_client_session_over_https_with_the_default_model(https_chat: httpx.Client) -> None:
    models = graphql(https_chat, GET_AVAILABLE_MODELS)["data"]["availableModels"]["models"]
    assert MODEL in models

    conversation_id = create_conversation(https_chat, "Web client", model=MODEL)
    listed = graphql(https_chat, GET_CONVERSATIONS)["data"]["conversations"]["conversations"]
    assert conversation_id in [c["id"] for c in listed]

    first = stream_message(https_chat, model=MODEL, message="Name three colours.", conversation_id=conversation_id)
    assert first.ended, first.raw
    assert first.text.strip()

    stopped: dict = {}

    def stop_after_two(seen: ClientStream) -> bool:
        if len(seen.tokens) == 2 and not stopped:
            stopped.update(terminate(https_chat, seen.session_id, conversation_id))
        return False

    second = stream_message(
        https_chat, model=MODEL, message="Tell me a long story about a fox.", conversation_id=conversation_id,
        on_block=stop_after_two,
    )  # fmt: skip
    assert stopped["success"] is True
    assert stopped["partialResponse"] == second.text

    messages = graphql(https_chat, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert [m["sender"] for m in messages] == ["user", "llm", "user", "llm"]
    assert messages[1]["text"] == first.text
    assert messages[3]["text"] == second.text

    deleted = graphql(
        https_chat, DELETE_MESSAGES_AFTER, {"conversationId": conversation_id, "messageId": messages[2]["id"]}
    )
    assert deleted["data"]["deleteMessagesAfter"]["deletedCount"] == 2
    dropped = graphql(https_chat, DELETE_CONVERSATION, {"conversationId": conversation_id})
    assert dropped["data"]["deleteConversation"]["success"] is True
    response = https_chat.post("/graphql", json={"query": "{ availableModels { count } }"})
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert response.headers["access-control-allow-credentials"] == "true"
