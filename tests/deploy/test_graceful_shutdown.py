"""SIGTERM, as systemd, Docker and Kubernetes stop the service: open event streams end cleanly and at once."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx

from tests.fixtures.server import ServerProcess


def test_sigterm_ends_an_open_config_event_stream_cleanly(tmp_path: Path) -> None:
    """The configuration events stream only waits for news; on SIGTERM it must end with its response complete,
    not hold the shutdown until uvicorn's grace period runs out and cancels it (a traceback in the log)."""
    server = ServerProcess(tmp_path, f"sqlite:///{tmp_path / 'beth.sqlite3'}", {"OLLAMA_ENABLED": "false"})
    server.start()
    connected = threading.Event()
    outcome: dict[str, object] = {}

    def listen() -> None:
        try:
            with httpx.stream("GET", f"{server.url}/api/v1/config/events", timeout=60) as events:
                lines = events.iter_lines()
                outcome["first"] = next(lines)
                connected.set()
                outcome["rest"] = list(lines)  # returns only when the response ends
        except httpx.HTTPError as exc:
            outcome["error"] = repr(exc)
        finally:
            connected.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        assert connected.wait(30)
        assert outcome.get("first") == ": connected", outcome
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        listener.join(timeout=30)
    finally:
        server.kill()
    assert "error" not in outcome, outcome  # the stream's body ended properly, not cut off
    logs = server.logs()
    assert "graceful shutdown exceeded" not in logs
    assert "Traceback" not in logs
