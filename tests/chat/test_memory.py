"""Memory safeguards: a budget too small refuses the load cleanly; pressure unloads idle models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from app.services.memory_guard import MemoryGuard, read_memory
from inference.pool import ModelPool
from inference.pool_settings import PoolSettings
from tests.api.test_graphql_web_client import create_conversation
from tests.chat.conftest import chat_env
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess
from tests.fixtures.web_client import stream_message


def test_a_model_larger_than_the_budget_is_refused_without_loading(
    tmp_path: Path, chat_ollama: FakeOllama, chat_models_dir: Path
) -> None:
    server = ServerProcess(
        tmp_path, f"sqlite:///{tmp_path / 'm.sqlite3'}", chat_env(chat_ollama, chat_models_dir, HF_MEMORY_BUDGET_MB="1")
    )
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            conversation_id = create_conversation(client, model="hf/SmolLM2-135M-Instruct")
            seen = stream_message(
                client, model="hf/SmolLM2-135M-Instruct", message="hello", conversation_id=conversation_id
            )
            assert seen.error_payload is not None
            assert seen.error_payload["code"] == "MEMORY_EXCEEDED"
            messages = client.get(f"/api/v1/conversations/{conversation_id}/messages").json()["messages"]
            assert [m["text"] for m in messages] == ["hello"]  # the user's message is kept
            metrics = client.get("/metrics").text
            assert 'beth_memory_bytes{kind="process_rss"}' in metrics
            assert "beth_models_loaded{" not in metrics  # nothing was loaded
            ok = stream_message(client, model="llama3.1:8b", message="still fine?", conversation_id=conversation_id)
            assert ok.ended
    finally:
        server.stop()


def test_memory_pressure_unloads_idle_models_only(tiny_export: Path) -> None:
    async def scenario() -> tuple[list[str], list[str], list[str]]:
        pool = ModelPool(tiny_export.parent, PoolSettings(num_threads=1, keep_alive_s=None))
        guard = MemoryGuard(lambda: pool, min_available_bytes=2**62, interval_s=60)  # always "under pressure"
        async with pool.lease(tiny_export.name):
            while_busy = await guard.check()  # in use: never unloaded
        idle = await guard.check()
        after = [m.alias for m in pool.loaded()]
        await pool.close()
        return while_busy, idle, after

    while_busy, idle, after = asyncio.run(scenario())
    assert while_busy == []
    assert idle == [tiny_export.name]
    assert after == []


def test_memory_readings_come_from_the_system() -> None:
    reading = read_memory()
    assert reading.process_rss_bytes is not None
    assert reading.process_rss_bytes > 10 * 2**20
    assert reading.system_available_bytes is not None
    assert reading.system_available_bytes > 0
