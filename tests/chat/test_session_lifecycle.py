"""Stream sessions across time and processes: timeout, restart recovery, shutdown, another replica."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tokenizers import Tokenizer

from tests.api.test_graphql_web_client import create_conversation
from tests.chat.conftest import chat_env
from tests.chat.test_stream_turn import stored
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, query_sql
from tests.fixtures.web_client import ClientStream, stream_message, terminate


@pytest.fixture
def make_server(database_url: str, tmp_path: Path, chat_ollama: FakeOllama, chat_models_dir: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[ServerProcess] = []

    def make(name: str, ollama: FakeOllama | None = None, **env: str) -> ServerProcess:
        """A chat server on the shared fake Ollama, or on `ollama`; stopped at the end of the test."""
        process = ServerProcess(tmp_path / name, database_url, chat_env(ollama or chat_ollama, chat_models_dir, **env))
        process.start()
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


def test_a_stream_past_its_timeout_ends_with_the_partial_saved(make_server) -> None:
    server = make_server("timeout", STREAM_TIMEOUT_S="1")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        conversation_id = create_conversation(client, model="slow:latest")
        seen = stream_message(client, model="slow:latest", message="forever", conversation_id=conversation_id)
        assert seen.terminated is not None
        assert seen.terminated["reason"] == "TIMEOUT"
        assert seen.tokens
        (reply,) = [m for m in stored(client, conversation_id) if m["sender"] == "llm"]
        assert reply["text"] == seen.text
        assert reply["status"] == "partial"
        assert reply["finishReason"] == "timeout"


def test_a_killed_process_leaves_no_active_session_behind(make_server, database_url: str) -> None:
    first = make_server("first")
    with httpx.Client(base_url=first.url, timeout=30) as client:
        conversation_id = create_conversation(client, model="slow:latest")
        seen = stream_message(
            client, model="slow:latest", message="crash", conversation_id=conversation_id,
            on_block=lambda s: len(s.tokens) >= 5,
        )  # fmt: skip
    # past a flush: the session's stored partial text already holds what the client saw
    wait_until(
        lambda: any(
            str(text).startswith(seen.text)
            for (text,) in query_sql(
                database_url, f"SELECT partial_response FROM stream_sessions WHERE id = '{seen.session_id}'"
            )
        ),
        timeout=20,
        what="the partial reply flushed",
    )
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    first.process = None

    first.start()  # the same service again, on the same database
    try:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            replies = wait_until(
                lambda: [m for m in stored(client, conversation_id) if m["sender"] == "llm"], timeout=20
            )
            assert replies[0]["status"] == "partial"
            assert replies[0]["text"].startswith(seen.text)
            result = terminate(client, seen.session_id, conversation_id)
            assert result["success"] is False
            assert result["terminationReason"] == "SERVER_SHUTDOWN"
    finally:
        first.stop()


def test_shutdown_saves_the_partial_reply(make_server, chat_ollama: FakeOllama) -> None:
    server = make_server("shutdown")
    client = httpx.Client(base_url=server.url, timeout=30)
    conversation_id = create_conversation(client, model="slow:latest")
    seen: list[ClientStream] = []

    def listen() -> None:
        seen.append(stream_message(client, model="slow:latest", message="bye", conversation_id=conversation_id))

    sent_before = chat_ollama.chunks_sent["slow:latest"]
    thread = threading.Thread(target=listen)
    thread.start()
    wait_until(lambda: chat_ollama.chunks_sent["slow:latest"] - sent_before >= 2, what="the reply under way")
    server.stop()
    thread.join(30)
    assert seen
    assert seen[0].terminated is not None
    assert seen[0].terminated["reason"] == "SERVER_SHUTDOWN"
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as fresh:
        (reply,) = [m for m in stored(fresh, conversation_id) if m["sender"] == "llm"]
        assert reply["status"] == "partial"
        assert reply["text"]
        assert seen
        assert reply["text"].startswith(seen[0].text)
    client.close()


def test_a_termination_through_another_replica_stops_the_stream(make_server) -> None:
    owner = make_server("owner")
    other = make_server("other")
    timings: dict[str, float] = {}
    with httpx.Client(base_url=owner.url, timeout=30) as client, httpx.Client(base_url=other.url, timeout=30) as remote:
        conversation_id = create_conversation(client, model="slow:latest")

        def stop_remotely(seen: ClientStream) -> bool:
            if len(seen.tokens) == 2 and "asked" not in timings:
                timings["asked"] = time.monotonic()
                result = terminate(remote, seen.session_id, conversation_id)
                assert result["success"] is True
            return False

        seen = stream_message(
            client,
            model="slow:latest",
            message="stop me elsewhere",
            conversation_id=conversation_id,
            on_block=stop_remotely,
        )
        stopped_after = time.monotonic() - timings["asked"]
        assert seen.terminated is not None
        assert stopped_after < 1.5
        (reply,) = [m for m in stored(client, conversation_id) if m["sender"] == "llm"]
        assert reply["text"] == seen.text


def test_a_termination_through_another_replica_answers_with_the_owners_final_reply(make_server) -> None:
    """The answer waits for the owner to stop and save: it holds the saved reply and exactly what the client
    got, and no token reaches the client after it."""
    owner = make_server("owner")
    other = make_server("other")
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=owner.url, timeout=30) as client, httpx.Client(base_url=other.url, timeout=30) as remote:
        conversation_id = create_conversation(client, model="slow:latest")

        def stop_remotely(seen: ClientStream) -> bool:
            if len(seen.tokens) == 2 and not answers:
                body = {"sessionId": seen.session_id, "conversationId": conversation_id}
                answers.append(remote.post("/api/terminate-stream", json=body))
            return False

        seen = stream_message(
            client, model="slow:latest", message="stop me elsewhere", conversation_id=conversation_id,
            on_block=stop_remotely,
        )  # fmt: skip
        (answer,) = answers
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["success"] is True
        assert seen.terminated is not None, seen.raw
        # everything the client received was sent before the answer: the answer's text is the whole of it
        assert result["partialResponse"] == seen.text == seen.terminated["partialResponse"]
        assert result["tokenCount"] == len(seen.tokens)
        (reply,) = [m for m in stored(client, conversation_id) if m["sender"] == "llm"]
        assert str(result["savedMessageId"]) == reply["id"]
        assert reply["text"] == seen.text


def test_images_for_a_text_model_go_to_the_vision_fallback(make_server, chat_ollama: FakeOllama) -> None:
    from tests.chat.test_images import tiny_png

    server = make_server("vision", VISION_FALLBACK_MODEL="llava:7b")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        conversation_id = create_conversation(client, model="llama3.1:8b")
        seen = stream_message(
            client, model="llama3.1:8b", message="describe", conversation_id=conversation_id,
            files=[("a.png", tiny_png(11), "image/png")],
        )  # fmt: skip
        assert seen.images["warnings"] == []
        assert seen.text == "I see 1 images."
        reply = stored(client, conversation_id)[-1]
        assert "llava:7b" in reply["model"]
        assert client.get(f"/api/v1/conversations/{conversation_id}").json()["llmModel"] == "llama3.1:8b"
        text_only = stream_message(client, model="llama3.1:8b", message="and now?", conversation_id=conversation_id)
        assert text_only.text == "Hello from llama3.1:8b!"


def rest_turn(client: httpx.Client, conversation_id: str, text: str) -> dict[str, dict[str, Any]]:
    """One streamed REST turn; its SSE events by name (the last of each)."""
    url = f"/api/v1/conversations/{conversation_id}/messages"
    with client.stream("POST", url, json={"text": text, "stream": True}) as response:
        assert response.status_code == 200
        raw = response.read().decode()
    events: dict[str, dict[str, Any]] = {}
    for block in raw.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events[fields["event"]] = json.loads(fields["data"])
    assert "end" in events, raw
    return events


def test_a_fallback_reply_names_the_model_that_could_not_start(make_server, busy_ollama: FakeOllama) -> None:
    server = make_server(
        "fallback", ollama=busy_ollama, FALLBACK_MODELS="hf/SmolLM2-135M-Instruct", PROVIDER_RETRIES="0"
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        conversation_id = create_conversation(client, model="llama3.1:8b")
        events = rest_turn(client, conversation_id, "anyone there?")
        reply = stored(client, conversation_id)[-1]
    assert events["session"]["model"] == "llama3.1:8b"  # what was asked for: nothing has answered yet
    assert events["end"]["model"] == "hf/SmolLM2-135M-Instruct"
    assert events["end"]["fallbackFrom"] == "llama3.1:8b"
    assert reply["model"] == "hf/SmolLM2-135M-Instruct"
    assert reply["status"] == "complete"


def test_a_fallback_with_a_smaller_context_gets_the_history_trimmed_to_its_own(
    make_server, busy_ollama: FakeOllama, tiny_export: Path
) -> None:
    """llama3.1:8b has 131072 tokens of context, the tiny fallback 512: a history that fits the first must
    be trimmed again for the second, or the fallback refuses it with CONTEXT_LENGTH_EXCEEDED."""
    tokenizer = Tokenizer.from_file(str(tiny_export / "tokenizer.json"))
    paragraph = " ".join(["the cat sat on a warm mat and looked at the birds in the garden"] * 3)
    assert 120 <= len(tokenizer.encode(paragraph).ids) <= 200
    server = make_server(
        "trimmed", ollama=busy_ollama, FALLBACK_MODELS="hf/tiny", PROVIDER_RETRIES="0", SYSTEM_PROMPT="Be brief."
    )
    with httpx.Client(base_url=server.url, timeout=60) as client:
        conversation_id = create_conversation(client, model="llama3.1:8b")
        ends = [rest_turn(client, conversation_id, f"{n}. {paragraph}")["end"] for n in range(4)]
        messages = stored(client, conversation_id)
    # four ~150-token messages (and the replies) no longer fit 512 tokens together: the later turns drop the oldest
    for end in ends:
        assert (end["model"], end["fallbackFrom"]) == ("hf/tiny", "llama3.1:8b")
    assert [m["sender"] for m in messages] == ["user", "llm"] * 4
    assert all(m["status"] == "complete" for m in messages if m["sender"] == "llm")
