"""Usage statistics and Prometheus metrics after real generations (complete, stopped and failed)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.test_graphql_web_client import create_conversation
from tests.chat.conftest import chat_env
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, running
from tests.fixtures.web_client import ClientStream, stream_message, terminate


@pytest.fixture
def fresh(
    empty_database: str, tmp_path: Path, chat_ollama: FakeOllama, chat_models_dir: Path
) -> Iterator[httpx.Client]:
    """A server on its own empty database, so the counts are this test's alone."""
    process = ServerProcess(tmp_path, empty_database, chat_env(chat_ollama, chat_models_dir))
    with running(process) as server, server.client(timeout=60) as client:
        yield client


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        sample, _, label_text = key.partition("{")
        if sample == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
            return float(value)
    raise AssertionError(f"no sample {name}{{{wanted}}} in the metrics")


def test_usage_and_metrics_follow_real_generations(fresh: httpx.Client) -> None:
    conversation_id = create_conversation(fresh, model="llama3.1:8b")
    for _ in range(3):
        assert stream_message(fresh, model="llama3.1:8b", message="hi", conversation_id=conversation_id).ended

    def stop(seen: ClientStream) -> bool:
        if len(seen.tokens) == 2:
            terminate(fresh, seen.session_id, conversation_id)
        return False

    stopped = stream_message(fresh, model="slow:latest", message="go", conversation_id=conversation_id, on_block=stop)
    assert stopped.terminated is not None
    failed = stream_message(fresh, model="midfail:latest", message="boom", conversation_id=conversation_id)
    assert failed.error is not None

    for period in ("hour", "day"):
        report = fresh.get("/api/v1/usage", params={"period": period}).json()
        rows = {row["model"]: row for row in report["rows"]}
        llama = rows["ollama/llama3.1:8b"]
        assert llama["requests"] == 3
        assert llama["promptTokens"] == 3 * 26
        assert llama["completionTokens"] == 3 * 3
        assert llama["errors"] == 0
        assert llama["averageDurationMs"] > 0
        assert rows["ollama/slow:latest"]["cancelled"] == 1
        assert rows["ollama/midfail:latest"]["errors"] == 1
        assert report["totals"]["requests"] == 5
    only = fresh.get("/api/v1/usage", params={"model": "ollama/llama3.1:8b"}).json()
    assert [row["model"] for row in only["rows"]] == ["ollama/llama3.1:8b"]
    assert fresh.get("/api/v1/usage", params={"since": "yesterday"}).status_code == 400
    graphql_rows = fresh.post(
        "/graphql", json={"query": '{ usage(period: "hour") { model requests completionTokens periodStart } }'}
    ).json()["data"]["usage"]
    assert {"model": "ollama/llama3.1:8b", "requests": 3, "completionTokens": 9} in [
        {k: row[k] for k in ("model", "requests", "completionTokens")} for row in graphql_rows
    ]

    assert fresh.get(f"/api/v1/conversations/{conversation_id}/messages").status_code == 200
    text = fresh.get("/metrics").text
    model = {"provider": "ollama", "model": "ollama/llama3.1:8b"}
    assert metric(text, "beth_generations_total", status="complete", **model) == 3
    assert metric(text, "beth_generations_total", provider="ollama", model="ollama/slow:latest", status="partial") == 1
    assert (
        metric(text, "beth_generations_total", provider="ollama", model="ollama/midfail:latest", status="failed") == 1
    )
    assert metric(text, "beth_tokens_generated_total", **model) == 9
    assert metric(text, "beth_time_to_first_token_seconds_count", **model) == 3
    assert metric(text, "beth_generation_duration_seconds_count", **model) == 3
    assert metric(text, "beth_active_streams") == 0
    assert metric(text, "beth_provider_health", provider="ollama") == 1
    assert metric(text, "beth_provider_health", provider="hf") == 1
    assert metric(text, "beth_provider_circuit_open", provider="ollama") == 0
    assert metric(text, "beth_http_requests_total", method="POST", route="/api/stream-message", status="200") == 5
    assert conversation_id not in text  # routes are counted by template, never by raw path
    assert 'route="/api/v1/conversations/{conversation_id}/messages"' in text


def generations_total(text: str) -> float:
    """`beth_generations_total` summed over every model and status."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("beth_generations_total{")
    )


def test_concurrent_generations_are_all_counted_once_per_hour_and_day(fresh: httpx.Client) -> None:
    """Many replies finishing at once each add to their hour and day rows; none is lost to a locked database."""
    conversations = [create_conversation(fresh, model="llama3.1:8b") for _ in range(20)]

    def run(conversation_id: str) -> bool:
        with httpx.Client(base_url=fresh.base_url, timeout=60) as client:
            return all(
                stream_message(client, model="llama3.1:8b", message=f"#{i}", conversation_id=conversation_id).ended
                for i in range(3)
            )

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert all(pool.map(run, conversations))
    generations = 20 * 3
    hour = fresh.get("/api/v1/usage", params={"period": "hour"}).json()
    day = fresh.get("/api/v1/usage", params={"period": "day"}).json()
    assert hour["totals"]["requests"] == day["totals"]["requests"] == generations
    assert hour["totals"]["completionTokens"] == day["totals"]["completionTokens"] == generations * 3
    assert generations_total(fresh.get("/metrics").text) == generations


def test_discovered_models_get_a_stored_default_configuration(fresh: httpx.Client) -> None:
    assert fresh.get("/api/v1/models").status_code == 200  # a listing, as any client would cause

    def stored() -> dict:
        return {row["name"]: row for row in fresh.get("/api/v1/model-configs").json()}

    configs = wait_until(lambda: stored() if "hf/tiny" in stored() else None)
    tiny = configs["hf/tiny"]
    assert tiny["enabled"] is True
    assert tiny["provider"] == "hf"
    assert tiny["contextLength"] == 512
    assert tiny["capabilities"]["text"] is True
    assert configs["ollama/llava:7b"]["capabilities"]["vision"] is True
    one = fresh.get("/api/v1/model-configs/ollama/llama3.1:8b")
    assert one.status_code == 200
    assert one.json()["contextLength"] > 0
    assert fresh.get("/api/v1/model-configs/hf/nothing").json()["error"]["code"] == "MODEL_NOT_FOUND"


def test_model_loads_and_unloads_are_counted(fresh: httpx.Client) -> None:
    assert fresh.post("/api/v1/models/hf/tiny/load").status_code == 200
    assert fresh.post("/api/v1/models/hf/tiny/unload").status_code == 200
    text = fresh.get("/metrics").text
    assert metric(text, "beth_model_loads_total", model="hf/tiny", status="loaded") == 1
    assert metric(text, "beth_model_load_seconds_count", model="hf/tiny") == 1
    assert metric(text, "beth_model_load_seconds_sum", model="hf/tiny") > 0
    assert metric(text, "beth_model_unloads_total", model="hf/tiny", reason="requested") == 1
