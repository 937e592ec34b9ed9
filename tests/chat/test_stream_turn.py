"""The chat turn as the old web client drives it: stream, stop, delete, over and over, on both databases."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.api.test_graphql_web_client import (
    DELETE_MESSAGES_AFTER,
    GET_MESSAGES,
    SEND_MESSAGE,
    add_message,
    create_conversation,
)
from tests.chat.conftest import chat_env
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, graphql, run_sql
from tests.fixtures.web_client import GREEDY, ClientStream, stream_message, terminate


def stored(client: httpx.Client, conversation_id: str) -> list[dict]:
    response = client.get(f"/api/v1/conversations/{conversation_id}/messages")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def test_stream_a_reply_like_the_web_client(chat: httpx.Client, chat_ollama: FakeOllama) -> None:
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    seen = stream_message(chat, model="llama3.1:8b", message="Say hello", conversation_id=conversation_id)
    assert seen.status == 200
    assert seen.session_id is not None
    assert seen.session_id.startswith("stream_")
    assert seen.error is None
    assert seen.ended
    assert seen.text == "Hello from llama3.1:8b!"
    # the old `{}` plus who answered, on one `data:` line, as the client splits it
    end = 'event: end\ndata: {"provider":"ollama","model":"ollama/llama3.1:8b","fallbackFrom":null}\n\n'
    assert seen.raw.endswith(end)

    user, reply = stored(chat, conversation_id)
    assert (user["sender"], user["text"]) == ("user", "Say hello")
    assert (reply["sender"], reply["text"], reply["status"]) == ("llm", "Hello from llama3.1:8b!", "complete")
    assert reply["provider"] == "ollama"
    assert "llama3.1:8b" in reply["model"]
    assert reply["completionTokens"] == 3
    assert reply["promptTokens"] == 26
    assert reply["durationMs"] > 0


def test_the_context_has_the_system_prompt_history_and_the_turn_once(
    chat: httpx.Client, chat_ollama: FakeOllama
) -> None:
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    stream_message(chat, model="llama3.1:8b", message="first question", conversation_id=conversation_id)
    stream_message(chat, model="llama3.1:8b", message="second question", conversation_id=conversation_id)
    request = next(r for r in reversed(chat_ollama.chats()) if r["messages"][-1]["content"] == "second question")
    roles = [m["role"] for m in request["messages"]]
    contents = [m["content"] for m in request["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert contents[1:] == ["first question", "Hello from llama3.1:8b!", "second question"]
    assert contents.count("second question") == 1
    assert request["stream"] is True
    assert request["options"]["num_ctx"] > 0
    assert "LaTeX" in contents[0]


@pytest.mark.slow
def test_switching_models_keeps_the_whole_history(chat: httpx.Client, chat_ollama: FakeOllama) -> None:
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    stream_message(chat, model="llama3.1:8b", message="one", conversation_id=conversation_id)
    seen = stream_message(chat, model="hf/SmolLM2-135M-Instruct", message="two", conversation_id=conversation_id)
    assert seen.ended, seen.raw
    seen = stream_message(chat, model="llama3.1:8b", message="three", conversation_id=conversation_id)
    assert seen.ended
    request = next(r for r in reversed(chat_ollama.chats()) if r["messages"][-1]["content"] == "three")
    assert [m["content"] for m in request["messages"][1:]][:3] == ["one", "Hello from llama3.1:8b!", "two"]
    models = [m["model"] for m in stored(chat, conversation_id) if m["sender"] == "llm"]
    assert "hf/SmolLM2-135M-Instruct" in models[1]
    conversation = chat.get(f"/api/v1/conversations/{conversation_id}").json()
    assert "llama3.1:8b" in conversation["llmModel"]


def test_stop_in_the_middle_saves_exactly_what_was_sent(chat: httpx.Client) -> None:
    conversation_id = create_conversation(chat, model="slow:latest")
    result: dict = {}

    def stop_after_three_tokens(seen: ClientStream) -> bool:
        if len(seen.tokens) == 3 and not result:
            result.update(terminate(chat, seen.session_id, conversation_id))
        return False

    seen = stream_message(
        chat,
        model="slow:latest",
        message="count slowly",
        conversation_id=conversation_id,
        on_block=stop_after_three_tokens,
    )
    assert result["success"] is True
    assert result["finalStatus"] == "TERMINATED"
    assert result["terminationReason"] == "USER_REQUESTED"
    assert result["error"] is None
    assert seen.terminated is not None
    assert not seen.ended
    assert result["partialResponse"] == seen.text == seen.terminated["partialResponse"]
    assert result["tokenCount"] == len(seen.tokens) >= 3
    replies = [m for m in stored(chat, conversation_id) if m["sender"] == "llm"]
    assert len(replies) == 1
    assert replies[0]["text"] == seen.text
    assert replies[0]["status"] == "partial"

    again = terminate(chat, seen.session_id, conversation_id)
    assert again["success"] is False
    assert again["message"] == "Session is in TERMINATED state and cannot be terminated"
    assert again["partialResponse"] == seen.text


def test_rest_terminate_uses_the_old_status_codes(chat: httpx.Client) -> None:
    conversation_id = create_conversation(chat, model="slow:latest")
    responses: list[httpx.Response] = []

    def stop(seen: ClientStream) -> bool:
        if seen.tokens and not responses:
            body = {"sessionId": seen.session_id, "conversationId": "someone-else"}
            responses.append(chat.post("/api/terminate-stream", json=body))
            body["conversationId"] = conversation_id
            responses.append(chat.post("/api/terminate-stream", json=body))
        return False

    seen = stream_message(chat, model="slow:latest", message="go", conversation_id=conversation_id, on_block=stop)
    wrong, ok = responses
    assert wrong.status_code == 404  # the other conversation does not exist
    assert ok.status_code == 200
    assert ok.json()["success"] is True
    assert ok.json()["partialResponse"] == seen.text
    assert ok.json()["savedMessageId"] is not None
    assert chat.post("/api/terminate-stream", json={}).status_code == 400
    missing = chat.post("/api/terminate-stream", json={"sessionId": "stream_x_y", "conversationId": conversation_id})
    assert missing.status_code == 404
    assert missing.json()["error"] == "Session not found"
    done = chat.post("/api/terminate-stream", json={"sessionId": seen.session_id, "conversationId": conversation_id})
    assert done.status_code == 400
    assert done.json()["sessionStatus"] == "TERMINATED"


def test_a_client_that_disconnects_does_not_lose_the_reply(chat: httpx.Client, chat_ollama: FakeOllama) -> None:
    conversation_id = create_conversation(chat, model="slow:latest")
    sent_before = chat_ollama.chunks_sent["slow:latest"]
    seen = stream_message(
        chat, model="slow:latest", message="long story", conversation_id=conversation_id,
        on_block=lambda s: len(s.tokens) >= 2,
    )  # fmt: skip
    assert len(seen.tokens) == 2
    session_id = seen.session_id
    # the model keeps streaming after the client left
    wait_until(lambda: chat_ollama.chunks_sent["slow:latest"] - sent_before > len(seen.tokens) + 1)
    # The generation goes on server-side; stop it explicitly and find every token of it saved.
    result = terminate(chat, session_id, conversation_id)
    assert result["success"] is True
    assert result["tokenCount"] > len(seen.tokens)
    assert result["partialResponse"].startswith(seen.text)
    (reply,) = [m for m in stored(chat, conversation_id) if m["sender"] == "llm"]
    assert reply["text"] == result["partialResponse"]


def test_addmessage_runs_the_same_turn_without_streaming(chat: httpx.Client) -> None:
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    result = graphql(chat, SEND_MESSAGE, {"input": {"conversationId": conversation_id, "text": "hi", "sender": "user"}})
    added = result["data"]["addMessage"]
    assert added["error"] is None
    assert added["llmMessage"]["text"] == "Hello from llama3.1:8b!"
    assert added["llmMessage"]["sender"] == "llm"
    assert added["llmResponseTime"] > 0
    assert "llama3.1:8b" in added["llmModel"]
    assert [
        m["text"] for m in graphql(chat, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    ] == [
        "hi",
        "Hello from llama3.1:8b!",
    ]


def test_a_failing_model_keeps_the_user_message_and_explains(chat: httpx.Client) -> None:
    conversation_id = create_conversation(chat, model="nonexistent:1b")
    result = graphql(
        chat, SEND_MESSAGE, {"input": {"conversationId": conversation_id, "text": "hello?", "sender": "user"}}
    )
    added = result["data"]["addMessage"]
    assert added["llmMessage"] is None
    assert added["error"]
    assert added["userMessage"]["text"] == "hello?"
    seen = stream_message(chat, model="midfail:latest", message="try", conversation_id=conversation_id)
    assert seen.error is not None
    assert seen.error_payload["code"] in ("GENERATION_FAILED", "PROVIDER_UNAVAILABLE")
    texts = [(m["sender"], m["text"], m["status"]) for m in stored(chat, conversation_id)]
    assert ("user", "hello?", "complete") in texts
    assert ("user", "try", "complete") in texts
    assert ("llm", "Starting ", "failed") in texts


def test_nul_characters_in_a_reply_are_dropped_so_it_can_be_stored(chat: httpx.Client) -> None:
    """PostgreSQL text cannot hold NUL: a reply carrying some is stored, and streamed, without them."""
    conversation_id = create_conversation(chat, model="nul:latest")
    seen = stream_message(chat, model="nul:latest", message="anything odd?", conversation_id=conversation_id)
    assert seen.error is None, seen.error_payload
    assert seen.text == "Nulls inside."
    reply = stored(chat, conversation_id)[-1]
    assert (reply["sender"], reply["text"], reply["status"]) == ("llm", "Nulls inside.", "complete")


#: writes a test can make the database refuse: trigger name -> (table, event, condition on NEW)
REFUSALS = {
    "refuse_user_message": ("messages", "INSERT", "NEW.sender = 'user'"),
    "refuse_reply": ("messages", "INSERT", "NEW.sender = 'llm'"),
    "refuse_end": ("stream_sessions", "UPDATE", "NEW.status <> 'ACTIVE'"),
    "refuse_flush": (
        "stream_sessions",
        "UPDATE",
        "NEW.status = 'ACTIVE' AND NEW.partial_response <> OLD.partial_response",
    ),
}


@contextmanager
def database_refusing(database_url: str, conversation_id: str, *names: str) -> Iterator[None]:
    """The database refuses these writes (REFUSALS) for one conversation: real failures, raised by triggers,
    as a full disk or a lost connection would."""
    refusals = {name: REFUSALS[name] for name in names}
    only_here = f"NEW.conversation_id = '{conversation_id}'"
    if database_url.startswith("sqlite"):
        create = "".join(
            f"CREATE TRIGGER {name} BEFORE {event} ON {table} WHEN {only_here} AND {condition} "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END;"
            for name, (table, event, condition) in refusals.items()
        )
        drop = "".join(f"DROP TRIGGER {name};" for name in refusals)
    else:
        create = (
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql;"
        )
        create += "".join(
            f"CREATE TRIGGER {name} BEFORE {event} ON {table} FOR EACH ROW WHEN ({only_here} AND {condition}) "
            "EXECUTE FUNCTION refuse();"
            for name, (table, event, condition) in refusals.items()
        )
        drop = "".join(f"DROP TRIGGER {name} ON {table};" for name, (table, _, _) in refusals.items())
        drop += "DROP FUNCTION refuse();"
    run_sql(database_url, create)
    try:
        yield
    finally:
        run_sql(database_url, drop)


def test_a_database_that_cannot_record_the_end_of_a_turn_still_ends_the_stream(
    chat: httpx.Client, database_url: str
) -> None:
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    deadline = time.monotonic() + 20
    with (
        httpx.Client(base_url=chat.base_url, timeout=20) as client,
        database_refusing(database_url, conversation_id, "refuse_reply", "refuse_end"),
    ):
        seen = stream_message(
            client, model="llama3.1:8b", message="is anyone keeping notes?", conversation_id=conversation_id,
            on_block=lambda _: time.monotonic() > deadline,  # a stream with no end is a failure, not a hang
        )  # fmt: skip
    assert seen.error is not None, seen.raw
    assert seen.error_payload["code"] == "INTERNAL_ERROR"
    assert seen.error == "The reply could not be saved"
    assert seen.text == "Hello from llama3.1:8b!"  # the client saw the whole reply before the failure
    # the user's message, saved first, is kept; the refused reply is not there
    assert [(m["sender"], m["text"]) for m in stored(chat, conversation_id)] == [("user", "is anyone keeping notes?")]


def test_a_database_that_cannot_store_the_message_ends_both_streams_with_an_error(
    chat: httpx.Client, database_url: str
) -> None:
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    with database_refusing(database_url, conversation_id, "refuse_user_message"):
        seen = stream_message(chat, model="llama3.1:8b", message="hello?", conversation_id=conversation_id)
        url = f"/api/v1/conversations/{conversation_id}/messages"
        with chat.stream("POST", url, json={"text": "hello?", "stream": True}) as response:
            typed = response.read().decode()
    assert seen.error_payload is not None, seen.raw
    assert seen.error_payload["code"] == "INTERNAL_ERROR"
    assert "event: error" in typed
    assert '"code":"INTERNAL_ERROR"' in typed
    assert stored(chat, conversation_id) == []


def test_rest_reply_and_typed_stream(chat: httpx.Client) -> None:
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    reply = chat.post(f"/api/v1/conversations/{conversation_id}/messages", json={"text": "json please", "reply": True})
    assert reply.status_code == 201
    body = reply.json()
    assert body["userMessage"]["text"] == "json please"
    assert body["reply"]["text"] == "Hello from llama3.1:8b!"
    assert body["error"] is None
    with chat.stream(
        "POST", f"/api/v1/conversations/{conversation_id}/messages", json={"text": "stream please", "stream": True}
    ) as response:
        assert response.status_code == 200
        raw = response.read().decode()
    names = [line.split(": ", 1)[1] for line in raw.split("\n") if line.startswith("event: ")]
    assert names[0] == "user_message"
    assert names[1] == "session"
    assert names[-1] == "end"
    assert names.count("token") == 3
    end = json.loads([line for line in raw.split("\n") if line.startswith("data: ")][-1].split(": ", 1)[1])
    assert end["model"] == "ollama/llama3.1:8b"
    assert sorted(end["usage"]) == ["completionTokens", "durationMs", "promptTokens", "timeToFirstTokenMs"]
    assert end["usage"]["completionTokens"] == 3


def test_150_streams_in_a_row(chat: httpx.Client) -> None:
    """The old service crashed on the 101st stream since boot."""
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    for i in range(150):
        seen = stream_message(chat, model="llama3.1:8b", message=f"#{i}", conversation_id=conversation_id)
        assert seen.ended, (i, seen.raw)
    assert len(stored(chat, conversation_id)) == 300
    assert chat.get("/health").status_code == 200


def test_concurrent_streams_on_one_and_on_many_conversations(chat: httpx.Client, chat_server: ServerProcess) -> None:
    shared = create_conversation(chat, model="llama3.1:8b")
    own = [create_conversation(chat, model="llama3.1:8b") for _ in range(4)]
    targets = [shared] * 4 + own
    results: list[ClientStream] = []
    lock = threading.Lock()

    def run(conversation_id: str) -> None:
        with httpx.Client(base_url=chat_server.url, timeout=60) as client:
            seen = stream_message(client, model="llama3.1:8b", message="together", conversation_id=conversation_id)
        with lock:
            results.append(seen)

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == len(targets)
    assert all(r.ended and r.text == "Hello from llama3.1:8b!" for r in results)
    assert len({r.session_id for r in results}) == len(targets)
    assert len(stored(chat, shared)) == 8
    assert all(len(stored(chat, c)) == 2 for c in own)


def test_delete_messages_after_a_streamed_turn(chat: httpx.Client) -> None:
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    stream_message(chat, model="llama3.1:8b", message="keep", conversation_id=conversation_id)
    stream_message(chat, model="llama3.1:8b", message="drop", conversation_id=conversation_id)
    drop_id = next(m["id"] for m in stored(chat, conversation_id) if m["text"] == "drop")
    result = graphql(chat, DELETE_MESSAGES_AFTER, {"conversationId": conversation_id, "messageId": drop_id})
    assert result["data"]["deleteMessagesAfter"]["deletedCount"] == 2
    assert [m["text"] for m in stored(chat, conversation_id)] == ["keep", "Hello from llama3.1:8b!"]


def test_images_reach_a_vision_model(chat: httpx.Client, chat_ollama: FakeOllama) -> None:
    from tests.chat.test_images import tiny_png

    conversation_id = create_conversation(chat, model="llava:7b")
    seen = stream_message(
        chat, model="llava:7b", message="what do you see?", conversation_id=conversation_id,
        files=[("a.png", tiny_png(7), "image/png"), ("b.png", tiny_png(8), "image/png")],
    )  # fmt: skip
    assert seen.images["processed"] == 2
    assert seen.images["warnings"] == []
    assert seen.text == "I see 2 images."
    request = next(r for r in reversed(chat_ollama.chats()) if r["model"] == "llava:7b")
    assert len(request["messages"][-1]["images"]) == 2


def test_images_to_a_text_model_are_saved_and_the_client_warned(chat: httpx.Client, chat_ollama: FakeOllama) -> None:
    from tests.chat.test_images import tiny_png

    conversation_id = create_conversation(chat, model="llama3.1:8b")
    seen = stream_message(
        chat,
        model="llama3.1:8b",
        message="look",
        conversation_id=conversation_id,
        files=[("a.png", tiny_png(9), "image/png")],
    )
    assert seen.images["processed"] == 1
    assert "cannot see images" in seen.images["warnings"][0]
    assert seen.ended
    request = next(r for r in reversed(chat_ollama.chats()) if r["messages"][-1]["content"] == "look")
    assert not request["messages"][-1].get("images")


@pytest.mark.slow
def test_the_default_hf_model_end_to_end(chat: httpx.Client) -> None:
    # greedy, so the answer does not depend on a draw (the service samples at temperature 0.7 by default)
    greedy = {"models": {"hf/SmolLM2-135M-Instruct": {"options": {"temperature": 0}}}}
    assert chat.patch("/api/v1/config", json=greedy).status_code == 200
    conversation_id = create_conversation(chat, model="hf/SmolLM2-135M-Instruct")
    try:
        seen = stream_message(
            chat,
            model="hf/SmolLM2-135M-Instruct",
            message="What is the capital of France?",
            conversation_id=conversation_id,
        )
    finally:
        chat.patch("/api/v1/config", json={"models": {"hf/SmolLM2-135M-Instruct": None}})
    assert seen.ended, seen.raw
    assert seen.text.strip()
    assert "Paris" in seen.text
    reply = stored(chat, conversation_id)[-1]
    assert reply["text"] == seen.text
    assert reply["provider"] == "hf"
    assert reply["promptTokens"] > 10
    assert reply["timeToFirstTokenMs"] > 0


WARMUP = "mutation { warmupOllama { message models count status } }"


def test_warmup_loads_each_providers_first_model_and_never_throws(chat: httpx.Client, chat_ollama: FakeOllama) -> None:
    before = len(chat_ollama.chats())
    result = graphql(chat, WARMUP)["data"]["warmupOllama"]
    assert result["status"] == "ready"
    assert result["message"].startswith("Ollama service warmed up successfully")
    assert "llama3.1:8b" in result["models"]
    assert "hf/SmolLM2-135M-Instruct" in result["models"]
    assert result["count"] == len(result["models"])
    assert len(chat_ollama.chats()) > before


def test_hf_history_is_trimmed_by_the_models_own_token_count(
    tmp_path: Path, chat_ollama: FakeOllama, chat_models_dir: Path
) -> None:
    # "ж" is two byte-level tokens for the tiny model's tokenizer, far above the 3-characters-per-token
    # estimate: 300 of them look like ~100 tokens but are ~600, more than the model's 512-token context.
    # (The default system prompt alone is ~600 tiny-model tokens, hence a short one.)
    server = ServerProcess(tmp_path, f"sqlite:///{tmp_path / 'trim.sqlite3'}", chat_env(chat_ollama, chat_models_dir))
    server.env["SYSTEM_PROMPT"] = "Be brief."
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            conversation_id = create_conversation(client, model="hf/tiny")
            # stored as history (a turn would refuse a message this long for this model before storing it)
            url = f"/api/v1/conversations/{conversation_id}/messages"
            assert client.post(url, json={"text": "ж" * 300, "sender": "user"}).status_code == 201
            add_message(client, conversation_id, "ok", "llm")
            reply = stream_message(
                client, model="hf/tiny", message="hi", conversation_id=conversation_id, options=GREEDY
            )
            assert reply.error is None, reply.error_payload
            assert reply.ended
    finally:
        server.stop()
