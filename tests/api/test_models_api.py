"""The model catalog over real HTTP: REST `/api/v1/models` and `/providers`, GraphQL, readiness.

The server runs with a models directory holding the tiny export (and a folder that is not an export)
and with OLLAMA_HOST pointing at the Ollama-protocol test server; the last test stops that server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.ollama import MODELS as OLLAMA_MODELS
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, free_port, graphql, new_id, running

FAST_CATALOG = {
    "SYSTEM_PROMPT": "Be brief.",
    "CHAT_MAX_TOKENS": "8",
    "CATALOG_TTL_S": "0.2",
    "HEALTH_CHECK_INTERVAL_S": "0.3",
    "CATALOG_PROVIDER_TIMEOUT_S": "2",
}


@pytest.fixture(scope="module")
def models_dir(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("catalog-models")
    (models / "tiny").symlink_to(tiny_export, target_is_directory=True)
    (models / "half-copied").mkdir()
    return models


@pytest.fixture(scope="module")
def catalog_server(
    database_url: str, models_dir: Path, module_ollama: FakeOllama, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {"OLLAMA_HOST": module_ollama.url, "HF_MODELS_DIR": str(models_dir), "HF_NUM_THREADS": "1", **FAST_CATALOG}
    process = ServerProcess(tmp_path_factory.mktemp("catalog-server"), database_url, extra_env=env)
    with running(process):
        yield process


@pytest.fixture
def client(catalog_server: ServerProcess) -> Iterator[httpx.Client]:
    with catalog_server.client() as http:
        yield http


def test_lists_hf_and_ollama_models_side_by_side(client: httpx.Client) -> None:
    body = client.get("/api/v1/models").json()
    names = [m["name"] for m in body["models"]]
    assert names[:2] == ["ollama/drop:latest", "ollama/hang:latest"]  # Ollama first, by name
    assert "ollama/llama3.1:8b" in names
    assert names[-1] == "hf/tiny"
    assert "hf/half-copied" not in names
    assert body["count"] == len(names) == len(OLLAMA_MODELS) + 1  # the fake Ollama's, and hf/tiny
    tiny = body["models"][-1]
    assert tiny["provider"] == "hf"
    assert tiny["nativeName"] == "tiny"
    assert tiny["contextLength"] == 512
    assert tiny["capabilities"] == {"text": True, "vision": False, "streaming": True}
    providers = {p["name"]: p for p in body["providers"]}
    assert providers["ollama"]["modelCount"] == len(OLLAMA_MODELS)
    assert providers["hf"]["modelCount"] == 1
    assert providers["ollama"]["circuit"]["state"] == "closed"


def test_search_and_filters(client: httpx.Client) -> None:
    def names(**params: str) -> list[str]:
        response = client.get("/api/v1/models", params=params)
        assert response.status_code == 200, response.text
        return [m["name"] for m in response.json()["models"]]

    assert names(search="llava") == ["ollama/llava:7b"]
    assert names(search="lama3.1") == ["ollama/llama3.1:8b"]
    assert names(provider="hf") == ["hf/tiny"]
    assert names(capability="vision") == ["ollama/llava:7b"]
    assert names(loaded="true") == []
    assert client.get("/api/v1/models", params={"capability": "smell"}).status_code == 400


def test_one_model_by_name_with_slashes_and_colons(client: httpx.Client) -> None:
    llama = client.get("/api/v1/models/ollama/llama3.1:8b")
    assert llama.status_code == 200, llama.text
    assert llama.json()["contextLength"] == 8192
    assert llama.json()["metadata"]["maxContextLength"] == 131072
    assert client.get("/api/v1/models/llama3.1:8b").json()["name"] == "ollama/llama3.1:8b"  # bare name
    assert client.get("/api/v1/models/hf/tiny").json()["quantization"] == "none"
    missing = client.get("/api/v1/models/hf/tinny")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "MODEL_NOT_FOUND"
    assert "hf/tiny" in error["details"]["suggestions"]


def test_load_and_unload(client: httpx.Client, module_ollama: FakeOllama) -> None:
    loaded = client.post("/api/v1/models/hf/tiny/load")
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["action"] == "load"
    assert loaded.json()["model"]["loaded"] is True
    assert client.get("/api/v1/models", params={"loaded": "true"}).json()["count"] == 1
    assert client.post("/api/v1/models/hf/tiny/unload").json()["model"]["loaded"] is False
    assert client.post("/api/v1/models/ollama/llava:7b/load").json()["model"]["loaded"] is True
    assert "llava:7b" in module_ollama.loaded
    client.post("/api/v1/models/llava:7b/unload")
    assert "llava:7b" not in module_ollama.loaded
    wrong = client.post("/api/v1/models/hf/tiny/warm")
    assert wrong.status_code == 404
    assert wrong.json()["error"]["code"] == "NOT_FOUND"
    assert client.post("/api/v1/models/hf/nope/load").json()["error"]["code"] == "MODEL_NOT_FOUND"


def test_providers_endpoint_and_readiness(client: httpx.Client) -> None:
    providers = client.get("/api/v1/providers").json()
    assert [p["name"] for p in providers["providers"]] == ["ollama", "hf"]
    assert providers["count"] == 2
    hf = providers["providers"][1]
    assert hf["prefix"] == "hf/"
    assert hf["health"]["status"] in ("degraded", "unknown")
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert set(ready.json()["providers"]) == {"ollama", "hf"}


def test_graphql_available_models_models_and_providers(client: httpx.Client) -> None:
    body = graphql(client, "{ availableModels { models count } }")
    models = body["data"]["availableModels"]["models"]
    assert "llama3.1:8b" in models
    assert "hf/tiny" in models
    assert body["data"]["availableModels"]["count"] == len(models) == len(OLLAMA_MODELS) + 1
    query = """query($search: String, $capability: ModelCapability) {
      models(search: $search, capability: $capability) { name provider contextLength capabilities { vision } }
      providers { name prefix status circuit modelCount }
    }"""
    data = graphql(client, query, {"capability": "VISION"})["data"]
    assert data["models"] == [
        {"name": "ollama/llava:7b", "provider": "ollama", "contextLength": 4096, "capabilities": {"vision": True}}
    ]
    assert {p["name"]: p["modelCount"] for p in data["providers"]} == {"ollama": len(OLLAMA_MODELS), "hf": 1}


def test_a_stopped_ollama_leaves_the_hf_models_usable(client: httpx.Client, module_ollama: FakeOllama) -> None:
    module_ollama.stop()
    try:

        def readiness_without_ollama() -> dict | None:
            ready = client.get("/health/ready")
            assert ready.status_code == 200
            body = ready.json()
            return body if body["providers"]["ollama"]["status"] == "unhealthy" else None

        ready = wait_until(readiness_without_ollama, timeout=10, interval=0.2, what="Ollama reported unhealthy")
        assert ready["status"] == "ready"
        # the health check finds the port closed, or a request in flight saw the stop cut its connection
        detail = ready["providers"]["ollama"]["detail"]
        assert "not reachable" in detail or "closed the connection" in detail

        def failed_ollama_listing() -> dict | None:  # the cached list is served while the refresh notices
            body = client.get("/api/v1/models").json()
            assert "hf/tiny" in [m["name"] for m in body["models"]]
            ollama = next(p for p in body["providers"] if p["name"] == "ollama")
            return ollama if ollama["listingError"] else None

        ollama = wait_until(failed_ollama_listing, timeout=5, what="Ollama's listing to fail")
        assert ollama["health"]["status"] == "unhealthy"
        assert "not reachable" in ollama["listingError"]
        assert ollama["stale"] is True  # its models stay listed for CATALOG_STALE_S
        assert client.post("/api/v1/models/hf/tiny/load").json()["model"]["loaded"] is True
        conversation_id = new_id()
        created = graphql(
            client,
            "mutation($input: CreateConversationInput!) { createConversation(input: $input) { message } }",
            {"input": {"id": conversation_id, "tabName": "hf", "llmModel": "hf/tiny"}},
        )
        assert "errors" not in created, created
        reply = graphql(
            client,
            """mutation($input: AddMessageInput!) {
                 addMessage(input: $input) { llmModel error llmMessage { text } } }""",
            {"input": {"conversationId": conversation_id, "text": "Hello!", "sender": "user", "llmModel": "hf/tiny"}},
        )
        assert "errors" not in reply, reply
        # the tiny model's weights are random: it may end its reply at once, which is not a routing failure
        assert reply["data"]["addMessage"]["error"] in (None, "The model returned an empty reply")
        assert reply["data"]["addMessage"]["llmModel"] == "hf/tiny"
    finally:
        module_ollama.start()


@pytest.mark.slow
def test_the_default_model_is_listed_with_ollama_absent(
    default_export: Path, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A fresh install: only the embedded default model, and an OLLAMA_HOST where nothing listens."""
    models = tmp_path_factory.mktemp("default-models")
    (models / default_export.name).symlink_to(default_export, target_is_directory=True)
    env = {"OLLAMA_HOST": f"http://127.0.0.1:{free_port()}", "HF_MODELS_DIR": str(models), **FAST_CATALOG}
    server = ServerProcess(tmp_path_factory.mktemp("default-server"), database_url, extra_env=env)
    with running(server), server.client(timeout=60) as http:
        body = http.get("/api/v1/models").json()
        assert [m["name"] for m in body["models"]] == ["hf/SmolLM2-135M-Instruct"]
        smol = body["models"][0]
        assert smol["capabilities"] == {"text": True, "vision": False, "streaming": True}
        assert smol["contextLength"] >= 2048
        ollama = next(p for p in body["providers"] if p["name"] == "ollama")
        assert "not reachable" in ollama["listingError"]
        names = graphql(http, "{ availableModels { models } }")["data"]["availableModels"]["models"]
        assert names == ["hf/SmolLM2-135M-Instruct"]
        assert http.post("/api/v1/models/SmolLM2-135M-Instruct/load").json()["model"]["loaded"] is True
