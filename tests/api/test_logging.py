"""Logs: JSON lines with request ids, and never a password, token or message body."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.logging_setup import mask_secrets_in_text
from tests.fixtures.server import ServerProcess, free_port
from tests.fixtures.web_client import stream_message

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
    assert mask_secrets_in_text(raw) == clean


FORGED = "2026-12-03 07:00:00,000 ERROR   app.fake: INJECTED LOG LINE"


@pytest.fixture(params=["text", "json"])
def fallback_server(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[ServerProcess]:
    """Its Ollama is unreachable and another model is the fallback, so a requested model's name is logged."""
    env = {
        "LOG_FORMAT": request.param,
        "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
        "FALLBACK_MODELS": "fallback-model",
        "PROVIDER_RETRIES": "0",
    }
    server = ServerProcess(tmp_path, database_url, env)
    server.start()
    yield server
    server.stop()


def test_graphql_errors_are_logged_without_the_query_or_the_variables(fallback_server: ServerProcess) -> None:
    with httpx.Client(base_url=fallback_server.url, timeout=30) as client:

        def post(body: dict) -> dict:
            response = client.post("/graphql", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["errors"][0]["extensions"]["code"] == "INVALID_REQUEST", response.text
            return response.json()

        post(
            {
                "query": 'mutation { verifyPassword(input: {conversationId: "x" password "Hunter2-Syntax-Leak"}) { message } }'
            }
        )
        add = "mutation($i: AddMessageInput!) { addMessage(input: $i) { message } }"
        body = {"conversationId": "x", "text": ["My-Secret-Body-Leak"], "sender": "user"}
        post({"query": add, "variables": {"i": body}})
        password = 'query($p: String) { messages(conversationId: "x", password: $p) { id } }'
        post({"query": password, "variables": {"p": ["PwList-Leak-123"]}})
        post({"query": '{ messages(conversationId: "x", password: 987654321) { id } }'})
        injected = (
            f'mutation {{ verifyPassword(input: {{conversationId: "x" password """ok\n{FORGED}""" }}) {{ message }} }}'
        )
        post({"query": injected})
        for scalar in (b"42", b"null"):
            response = client.post("/graphql", content=scalar, headers={"content-type": "application/json"})
            assert response.status_code == 400
    fallback_server.stop()
    logs = fallback_server.logs()
    for secret in ("Hunter2-Syntax-Leak", "My-Secret-Body-Leak", "PwList-Leak-123", "987654321", "INJECTED"):
        assert secret not in logs, secret
    assert "graphql request refused: INVALID_REQUEST" in logs
    assert "Traceback" not in logs
    errors = [line for line in logs.splitlines() if '"level": "error"' in line or " ERROR " in line]
    assert not [line for line in errors if "graphql" in line or "unhandled error" in line]


def test_client_text_in_a_log_record_never_starts_a_line(fallback_server: ServerProcess) -> None:
    with httpx.Client(base_url=fallback_server.url, timeout=30) as client:
        created = client.post("/api/v1/conversations", json={"tabName": "t"})
        assert created.status_code == 201, created.text
        for separator in ("\n", "\r\n", "\u2028"):
            seen = stream_message(
                client, model=f"forger{separator}{FORGED}", message="hi", conversation_id=created.json()["id"]
            )
            assert seen.error_payload is not None  # neither model can answer: both are on the missing Ollama
    fallback_server.stop()
    lines = fallback_server.logs().splitlines()
    assert any("forger" in line and "INJECTED LOG LINE" in line for line in lines)  # it was logged, escaped
    assert not [line for line in lines if line.startswith(FORGED)]
    if fallback_server.env["LOG_FORMAT"] == "json":
        assert all(json.loads(line) for line in lines if line.strip())
