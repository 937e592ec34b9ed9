"""Edge cases at the service's borders: slow clients, malformed stream bodies, what errors show, model lists."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.api.test_graphql_web_client import GET_MESSAGES, create_conversation
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess, graphql, running
from tests.fixtures.web_client import ClientStream, stream_message

READ_TIMEOUT_S = 1.0
CLOSE_WITHIN_S = 20.0  # a bound for the poll only: without a read deadline the connection never closes


@pytest.fixture(scope="module")
def strict_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("strict"), database_url, {"REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S)}
    )
    with running(process):
        yield process


def _closed_by_server(sock: socket.socket, trickle: bytes = b"") -> bool:
    """Poll until the server closes `sock` (True) or the bound passes (False), sending `trickle` meanwhile."""
    deadline = time.monotonic() + CLOSE_WITHIN_S
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.sendall(trickle)
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def test_a_request_head_that_never_ends_is_closed(strict_server: ServerProcess) -> None:
    with _connect(strict_server) as sock:
        sock.sendall(b"POST /api/stream-message HTTP/1.1\r\nHost: x\r\n")
        # one more header line every poll keeps the connection busy, as a trickling client does
        assert _closed_by_server(sock, trickle=b"X-Slow: 1\r\n")


def test_a_connection_that_sends_nothing_is_closed(strict_server: ServerProcess) -> None:
    with _connect(strict_server) as sock:
        assert _closed_by_server(sock)


def test_a_stalled_request_body_is_closed(strict_server: ServerProcess) -> None:
    with _connect(strict_server) as sock:
        sock.sendall(
            b"POST /api/v1/conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"tabName": '
        )
        assert _closed_by_server(sock)


def test_prompt_clients_are_served_on_the_same_server(strict_server: ServerProcess) -> None:
    with _connect(strict_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sock.sendall(b"Connection: close\r\n\r\n")
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def form_body(conversation_id: str) -> bytes:
    """A well-formed multipart body for a turn, boundary `b0undary`."""
    parts = {"model": "llama3.1:8b", "message": "hello", "conversationId": conversation_id}
    return b"".join(
        f'--b0undary\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in parts.items()
    )


MALFORMED_FORMS = [
    pytest.param("multipart/form-data", lambda body: body + b"--b0undary--\r\n", id="missing-boundary"),
    pytest.param("multipart/form-data; boundary=other", lambda body: body + b"--b0undary--\r\n", id="wrong-boundary"),
    pytest.param("multipart/form-data; boundary=b0undary", lambda body: body[:-20], id="truncated"),
    pytest.param("multipart/form-data; boundary=b0undary", lambda body: b"\x00garbage" * 8, id="garbage"),
]


@pytest.mark.parametrize(("content_type", "damage"), MALFORMED_FORMS)
def test_a_malformed_form_gets_the_promised_error_event(
    api: httpx.Client, content_type: str, damage: Callable[[bytes], bytes]
) -> None:
    conversation_id = create_conversation(api)
    body = damage(form_body(conversation_id))
    response = api.post("/api/stream-message", content=body, headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    event, data = response.text.split("\n", 2)[:2]
    assert event == "event: error", response.text
    payload = json.loads(data.removeprefix("data: "))
    assert (payload["code"], payload["error"]) == ("INVALID_REQUEST", "Error processing multipart request")
    assert payload["details"], payload
    assert all(isinstance(problem, str) for problem in payload["details"])
    assert graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"] == []


@pytest.fixture(scope="module")
def ollama_server(
    database_url: str, module_ollama: FakeOllama, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    # health checks are rare here: whatever the service reports about Ollama comes from its requests
    env = {"OLLAMA_HOST": module_ollama.url, "HEALTH_CHECK_INTERVAL_S": "3600", "PROVIDER_RETRIES": "0"}
    process = ServerProcess(tmp_path_factory.mktemp("edge-ollama"), database_url, env)
    with running(process):
        yield process


@pytest.fixture
def ollama_api(ollama_server: ServerProcess) -> Iterator[httpx.Client]:
    with ollama_server.client() as client:
        yield client


@pytest.fixture
def stopped_ollama(module_ollama: FakeOllama) -> Iterator[FakeOllama]:
    """The fake Ollama, stopped by the test when it wants (as a killed Ollama), and started again after it."""
    yield module_ollama
    if not module_ollama.running:
        module_ollama.start()


def _killing_after_first_token(ollama: FakeOllama) -> Callable[[ClientStream], bool]:
    """An `on_block` that stops the fake Ollama once the first token arrived: killed in the middle of a reply."""

    def on_block(seen: ClientStream) -> bool:
        if seen.tokens and ollama.running:
            ollama.stop()
        return False

    return on_block


def _address(ollama: FakeOllama) -> str:
    return f"127.0.0.1:{ollama.port}"


def test_errors_name_no_ollama_address_but_the_log_does(
    ollama_api: httpx.Client, ollama_server: ServerProcess, stopped_ollama: FakeOllama
) -> None:
    conversation_id = create_conversation(ollama_api)

    cut = stream_message(
        ollama_api,
        model="slow:latest",
        message="go on",
        conversation_id=conversation_id,
        on_block=_killing_after_first_token(stopped_ollama),
    )
    refused = stream_message(ollama_api, model="llama3.1:8b", message="anyone?", conversation_id=conversation_id)
    rest = ollama_api.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"text": "hi", "reply": True, "model": "llama3.1:8b"}
    )
    for seen in (cut, refused):
        assert seen.error, seen.raw
        assert _address(stopped_ollama) not in seen.raw
        assert "http://" not in seen.error
    assert "not reachable" in refused.error
    assert rest.json()["error"]["code"] == "PROVIDER_UNAVAILABLE", rest.text
    assert _address(stopped_ollama) not in rest.text
    assert _address(stopped_ollama) not in ollama_api.get("/api/v1/providers").text
    assert _address(stopped_ollama) in ollama_server.logs()


def _ollama_health(api: httpx.Client) -> tuple[str, str]:
    ready = api.get("/health/ready").json()["providers"]["ollama"]["status"]
    listed = next(p for p in api.get("/api/v1/providers").json()["providers"] if p["name"] == "ollama")
    return ready, listed["health"]["status"]


def test_a_failed_request_reports_a_killed_ollama_at_once_and_a_success_heals_it(
    ollama_api: httpx.Client, stopped_ollama: FakeOllama
) -> None:
    conversation_id = create_conversation(ollama_api)
    assert stream_message(ollama_api, model="llama3.1:8b", message="hi", conversation_id=conversation_id).ended
    assert _ollama_health(ollama_api) == ("healthy", "healthy")

    stopped_ollama.stop()
    failed = stream_message(ollama_api, model="llama3.1:8b", message="still there?", conversation_id=conversation_id)
    assert failed.error_payload["code"] == "PROVIDER_UNAVAILABLE", failed.raw
    # no health check runs in this server's lifetime: only the failed request can have told
    assert _ollama_health(ollama_api) == ("unhealthy", "unhealthy")

    stopped_ollama.start()
    assert stream_message(ollama_api, model="llama3.1:8b", message="back?", conversation_id=conversation_id).ended
    assert _ollama_health(ollama_api) == ("healthy", "healthy")

    cut = stream_message(
        ollama_api,
        model="slow:latest",
        message="go on",
        conversation_id=conversation_id,
        on_block=_killing_after_first_token(stopped_ollama),
    )
    assert cut.tokens, cut.raw
    assert cut.error_payload["code"] == "GENERATION_FAILED", cut.raw
    assert _ollama_health(ollama_api) == ("unhealthy", "unhealthy")


def test_a_client_error_leaves_ollama_healthy(ollama_api: httpx.Client) -> None:
    conversation_id = create_conversation(ollama_api)
    assert stream_message(ollama_api, model="llama3.1:8b", message="hi", conversation_id=conversation_id).ended
    missing = stream_message(ollama_api, model="no-such-model:1b", message="hi", conversation_id=conversation_id)
    assert missing.error_payload["code"] == "MODEL_NOT_FOUND", missing.raw
    assert _ollama_health(ollama_api) == ("healthy", "healthy")
