"""Edge cases at the service's borders: slow clients, malformed stream bodies, what errors show, model lists."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.server import ServerProcess

READ_TIMEOUT_S = 1.0
CLOSE_WITHIN_S = 20.0  # a bound for the poll only: without a read deadline the connection never closes


@pytest.fixture(scope="module")
def strict_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path_factory.mktemp("strict"), database_url, {"REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S)}
    )
    process.start()
    yield process
    process.stop()


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


def test_prompt_clients_are_served_on_the_same_server(strict_server: ServerProcess, tmp_path: Path) -> None:
    with _connect(strict_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        sock.sendall(b"Connection: close\r\n\r\n")
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
