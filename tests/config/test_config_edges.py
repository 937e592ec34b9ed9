"""Configuration edge cases over real HTTP, on SQLite and PostgreSQL: removing what is not there, disabled
models left out of the lists clients choose from, and an execution provider this machine cannot run."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.api.test_graphql_web_client import create_conversation
from tests.fixtures.server import ServerProcess, graphql
from tests.fixtures.web_client import stream_message


def offered(client: httpx.Client) -> tuple[set[str], set[str]]:
    """What clients may choose from: REST `/api/v1/models` full names, and GraphQL `availableModels`."""
    rest = {m["name"] for m in client.get("/api/v1/models").json()["models"]}
    available = set(graphql(client, "{ availableModels { models } }")["data"]["availableModels"]["models"])
    return rest, available


def test_null_on_a_model_without_an_api_value_removes_nothing(admin: httpx.Client) -> None:
    before = admin.get("/api/v1/config").json()
    assert "llama3.1:8b" not in before["models"]
    response = admin.patch("/api/v1/config", json={"models": {"llama3.1:8b": None}})
    assert response.status_code == 200, response.text
    after = admin.get("/api/v1/config").json()
    assert after["models"] == before["models"]
    assert after["settings"] == before["settings"]


def test_a_disabled_model_is_not_offered_but_stays_configured(admin: httpx.Client) -> None:
    rest, available = offered(admin)
    assert {"ollama/llava:7b", "hf/tiny"} <= rest
    assert {"llava:7b", "hf/tiny"} <= available

    disabled = {"llava:7b": {"enabled": False}, "hf/tiny": {"enabled": False}}
    assert admin.patch("/api/v1/config", json={"models": disabled}).status_code == 200
    rest, available = offered(admin)
    assert not {"ollama/llava:7b", "hf/tiny"} & rest
    assert not {"llava:7b", "hf/tiny"} & available
    assert "ollama/llama3.1:8b" in rest  # the others stay
    assert "llama3.1:8b" in available
    configured = admin.get("/api/v1/config").json()["models"]
    assert configured["llava:7b"]["enabled"] is False
    assert configured["hf/tiny"]["enabled"] is False
    conversation = create_conversation(admin, model="llava:7b")
    refused = stream_message(admin, model="llava:7b", message="hi", conversation_id=conversation)
    assert refused.error is not None
    assert "disabled" in refused.error

    assert admin.patch("/api/v1/config", json={"models": {"llava:7b": None, "hf/tiny": None}}).status_code == 200
    rest, available = offered(admin)
    assert {"ollama/llava:7b", "hf/tiny"} <= rest
    assert {"llava:7b", "hf/tiny"} <= available


def _cuda_usable() -> bool:
    from inference.execution import cuda_usable

    return cuda_usable()


needs_no_cuda = pytest.mark.skipif(_cuda_usable(), reason="this machine can run CUDA: `cuda` is a valid choice here")


def effective(client: httpx.Client) -> tuple[dict, dict]:
    config = client.get("/api/v1/config").json()
    return config["settings"], config["models"]


@needs_no_cuda
def test_cuda_is_refused_where_it_cannot_run(admin: httpx.Client) -> None:
    effective_before = effective(admin)
    refused = admin.patch("/api/v1/config", json={"hfExecutionProvider": "cuda"})
    assert refused.status_code == 400, refused.text
    assert "CUDA is not available on this machine" in refused.json()["error"]["message"]
    assert "auto and cpu" in refused.json()["error"]["message"]
    assert effective(admin) == effective_before

    toml = {"content-type": "application/toml"}
    validated = admin.post("/api/v1/config/validate", content='hf_execution_provider = "cuda"\n', headers=toml)
    assert validated.json()["valid"] is False
    assert [e["key"] for e in validated.json()["errors"]] == ["hf_execution_provider"]
    restored = admin.post("/api/v1/config/restore", content='hf_execution_provider = "cuda"\n', headers=toml)
    assert restored.status_code == 400, restored.text
    assert effective(admin) == effective_before

    for choice in ("cpu", "auto"):
        accepted = admin.patch("/api/v1/config", json={"hfExecutionProvider": choice})
        assert accepted.status_code == 200, accepted.text
        assert admin.get("/api/v1/config").json()["settings"]["hf_execution_provider"]["value"] == choice
    assert admin.patch("/api/v1/config", json={"hfExecutionProvider": None}).status_code == 200


@needs_no_cuda
def test_cuda_from_the_environment_stops_the_start(database_url: str, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, database_url, {"HF_EXECUTION_PROVIDER": "cuda"})
    try:
        with pytest.raises(RuntimeError, match="exited with 2"):
            server.start()
    finally:
        server.stop()
    assert "CUDA is not available on this machine" in server.logs()
