"""The console's and the developer tools' pages over plain HTTP: their security headers and the admin rule."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import ServerProcess

PAGES = [
    "/console",
    "/console/models",
    "/console/providers",
    "/console/usage?period=day",
    "/console/config",
    "/console/streams",
    "/api/v1/schema",
    "/api/v1/schema/swagger",
]


@pytest.mark.parametrize("path", [*PAGES, "/graphql"])
def test_pages_name_no_other_origin(console_server: ServerProcess, path: str) -> None:
    response = httpx.get(console_server.url + path, headers={"Accept": "text/html"})
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert not re.search(r"https?:|\*", policy), policy
    assert not re.search(r"(src|href)=['\"](https?:)?//", response.text), "the page loads something from elsewhere"


@pytest.mark.parametrize("path", ["/console", "/console/events", "/console/config"])
def test_console_follows_the_admin_rule(console_server: ServerProcess, path: str) -> None:
    foreign = httpx.get(console_server.url + path, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "CROSS_ORIGIN"
    rebound = httpx.get(console_server.url + path, headers={"Host": "attacker.example"})
    assert rebound.status_code == 403
    assert rebound.json()["error"]["details"]["reason"] == "host_not_loopback"


def test_stopping_an_unknown_stream_is_not_found(console_server: ServerProcess) -> None:
    response = httpx.post(f"{console_server.url}/console/streams/nope/stop")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
    with_body = httpx.post(
        f"{console_server.url}/console/streams/nope/stop", content=b"x", headers={"Content-Type": "text/plain"}
    )
    assert with_body.status_code == 415


def test_an_open_console_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    """The live feed never ends by itself; at shutdown it must, or the server waits out its graceful timeout."""
    server = ServerProcess(tmp_path, f"sqlite:///{tmp_path / 'beth.sqlite3'}", {"OLLAMA_ENABLED": "false"})
    server.start()
    try:
        with httpx.stream("GET", f"{server.url}/console/events", timeout=30) as feed:
            lines = feed.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: live"
            server.stop()
    finally:
        server.stop()
    assert "timeout graceful shutdown exceeded" not in server.logs()
    assert "Application shutdown complete" in server.logs()
