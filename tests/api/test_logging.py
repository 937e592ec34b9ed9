"""Logs: JSON lines with request ids, and never a password, token or message body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.logging_setup import redact
from tests.fixtures.server import ServerProcess

SECRETS = ("pw-correct-horse", "sk-live-token-123", "TOP-SECRET-MESSAGE-BODY", "hunter2")


@pytest.fixture
def json_server(tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    # The database URL carries a password (trust auth ignores it) that must never be logged.
    url = (
        database_url.replace("postgres@", "postgres:hunter2@") if database_url.startswith("postgres") else database_url
    )
    server = ServerProcess(tmp_path, url, {"LOG_FORMAT": "json", "LOG_LEVEL": "debug", "OLLAMA_ENABLED": "0"})
    server.start()
    yield server
    server.stop()


def test_json_logs_carry_request_ids_and_no_secrets(json_server: ServerProcess) -> None:
    with httpx.Client(base_url=json_server.url, timeout=30) as client:
        headers = {"Authorization": "Bearer sk-live-token-123", "X-Request-ID": "trace-me-42"}
        created = client.post(
            "/api/v1/conversations", json={"tabName": "t", "password": "pw-correct-horse"}, headers=headers
        )
        assert created.status_code == 201
        assert created.headers["x-request-id"] == "trace-me-42"
        conversation_id = created.json()["id"]
        secret_headers = {"X-Conversation-Password": "pw-correct-horse"}
        client.post(
            f"/api/v1/conversations/{conversation_id}/messages",
            json={"text": "TOP-SECRET-MESSAGE-BODY"},
            headers=secret_headers,
        )
        client.post(
            "/api/stream-message",
            json={
                "model": "x",
                "message": "TOP-SECRET-MESSAGE-BODY",
                "conversationId": conversation_id,
                "password": "nope",
            },
        )
        query = 'query($id: String!) { messages(conversationId: $id, password: "pw-correct-horse") { text } }'
        client.post("/graphql", json={"query": query, "variables": {"id": conversation_id}})
        assert client.get("/api/v1/conversations/missing").status_code == 404
    json_server.stop()
    lines = [line for line in json_server.logs().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [r for r in records if r["logger"] == "beth-chat.access"]
    assert any(r["request_id"] == "trace-me-42" and r["status"] == 201 for r in access)
    assert all(r.get("request_id") for r in access)
    assert any(r["route"] == "/api/v1/conversations/{conversation_id}/messages" for r in access)
    log_text = json_server.logs()
    for secret in SECRETS:
        assert secret not in log_text, secret
    assert conversation_id not in " ".join(r["message"] for r in access)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("postgresql://beth:8826@db:5432/chat", "postgresql://beth:[redacted]@db:5432/chat"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer [redacted]"),
        ("password=hunter2&x=1", "password=[redacted]&x=1"),
        ('{"password": "hunter2"}', '{"password": "[redacted]"}'),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_redaction(raw: str, clean: str) -> None:
    assert redact(raw) == clean
