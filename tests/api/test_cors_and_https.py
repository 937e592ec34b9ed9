"""CORS as the web client needs it, and `serve --https` with a generated development certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import ServerProcess


def test_preflight_is_204_and_reflects_an_allowed_origin(api: httpx.Client) -> None:
    response = api.options(
        "/graphql",
        headers={
            "Origin": "https://localhost:3001",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://localhost:3001"
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "content-type" in allowed
    assert "authorization" in allowed


def test_every_response_reflects_the_origin_with_credentials(api: httpx.Client) -> None:
    for response in (
        api.post(
            "/graphql", json={"query": "{ availableModels { count } }"}, headers={"Origin": "http://localhost:3000"}
        ),
        api.get("/api/v1/conversations/missing", headers={"Origin": "http://localhost:3000"}),
    ):
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert response.headers["access-control-allow-credentials"] == "true"


def test_an_unknown_origin_gets_no_cors_grant(api: httpx.Client) -> None:
    response = api.post(
        "/graphql", json={"query": "{ availableModels { count } }"}, headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_root_and_health_answer_like_the_old_service(api: httpx.Client) -> None:
    assert api.get("/").json() == {
        "message": "Welcome to Beth LLM Chat Service!",
        "graphqlEndpoint": "/graphql",
        "playground": "/graphql",
        "protocol": "HTTP",
        "httpsEnabled": False,
    }
    health = api.get("/health").json()
    assert health["status"] == "OK"
    assert health["protocol"] == "HTTP"
    ready = api.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"]["ok"] is True


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path, f"sqlite:///{tmp_path / 'tls.sqlite3'}")
    process.start("--https")
    yield process
    process.stop()


def test_serve_https_generates_a_dev_certificate_and_speaks_tls(https_server: ServerProcess) -> None:
    cert = https_server.workdir / "data" / "tls" / "dev-cert.pem"
    assert cert.is_file()
    with httpx.Client(base_url=https_server.url, verify=str(cert)) as client:
        welcome = client.get("/").json()
        assert welcome["protocol"] == "HTTPS"
        assert welcome["httpsEnabled"] is True
        created = client.post("/api/v1/conversations", json={"tabName": "over TLS"})
        assert created.status_code == 201
