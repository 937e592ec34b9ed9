"""Stream sessions across time and processes: timeout, restart recovery, shutdown, another replica."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_graphql_web_client import create_conversation
from tests.chat.conftest import chat_env
from tests.chat.test_stream_turn import stored, wait_for
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess
from tests.fixtures.web_client import ClientStream, stream_message, terminate


@pytest.fixture
def make_server(database_url: str, tmp_path: Path, chat_ollama: FakeOllama, chat_models_dir: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[ServerProcess] = []

    def make(name: str, **env: str) -> ServerProcess:
        process = ServerProcess(tmp_path / name, database_url, chat_env(chat_ollama, chat_models_dir, **env))
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


def test_a_killed_process_leaves_no_active_session_behind(make_server) -> None:
    first = make_server("first")
    with httpx.Client(base_url=first.url, timeout=30) as client:
        conversation_id = create_conversation(client, model="slow:latest")
        seen = stream_message(
            client, model="slow:latest", message="crash", conversation_id=conversation_id,
            on_block=lambda s: len(s.tokens) >= 5,
        )  # fmt: skip
    time.sleep(0.5)  # past a flush of the partial text
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    first.process = None

    first.start()  # the same service again, on the same database
    try:
        with httpx.Client(base_url=first.url, timeout=30) as client:
            replies = wait_for(lambda: [m for m in stored(client, conversation_id) if m["sender"] == "llm"], timeout=20)
            assert replies[0]["status"] == "partial"
            assert replies[0]["text"].startswith(seen.text)
            result = terminate(client, seen.session_id, conversation_id)
            assert result["success"] is False
            assert result["terminationReason"] == "SERVER_SHUTDOWN"
    finally:
        first.stop()


def test_shutdown_saves_the_partial_reply(make_server) -> None:
    server = make_server("shutdown")
    client = httpx.Client(base_url=server.url, timeout=30)
    conversation_id = create_conversation(client, model="slow:latest")
    seen: list[ClientStream] = []

    def listen() -> None:
        seen.append(stream_message(client, model="slow:latest", message="bye", conversation_id=conversation_id))

    thread = threading.Thread(target=listen)
    thread.start()
    time.sleep(1.5)
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


def test_a_fallback_reply_names_the_model_that_could_not_start(
    database_url: str, tmp_path: Path, chat_models_dir: Path
) -> None:
    busy = FakeOllama().start()  # answers 503 to every chat: the provider is unavailable
    busy.mode = "busy"
    env = chat_env(busy, chat_models_dir, FALLBACK_MODELS="hf/SmolLM2-135M-Instruct", PROVIDER_RETRIES="0")
    server = ServerProcess(tmp_path / "fallback", database_url, env)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            conversation_id = create_conversation(client, model="llama3.1:8b")
            url = f"/api/v1/conversations/{conversation_id}/messages"
            with client.stream("POST", url, json={"text": "anyone there?", "stream": True}) as response:
                assert response.status_code == 200
                raw = response.read().decode()
            reply = stored(client, conversation_id)[-1]
    finally:
        server.stop()
        busy.stop()
    events = {}
    for block in raw.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events[fields["event"]] = json.loads(fields["data"])
    assert "end" in events, raw
    assert events["session"]["model"] == "llama3.1:8b"  # what was asked for: nothing has answered yet
    assert events["end"]["model"] == "hf/SmolLM2-135M-Instruct"
    assert events["end"]["fallbackFrom"] == "llama3.1:8b"
    assert reply["model"] == "hf/SmolLM2-135M-Instruct"
    assert reply["status"] == "complete"
