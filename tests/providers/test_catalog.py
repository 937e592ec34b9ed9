"""The catalog: all providers at once, a timeout each, a TTL cache served while it refreshes, search and filters."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import ErrorCode, ServiceError
from app.services.catalog import ModelCatalog
from app.services.health_monitor import HealthMonitor
from tests.fixtures.polling import wait_until_async
from tests.fixtures.providers import ScriptedProvider, registry_with, unavailable

pytestmark = pytest.mark.anyio


class ManualClock:
    """A clock the test moves forward, so a TTL expires without waiting for it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_catalog(
    clock: ManualClock | None = None, **kwargs: float
) -> tuple[ModelCatalog, ScriptedProvider, ScriptedProvider]:
    registry = registry_with()
    ollama = ScriptedProvider("ollama", ["mistral:7b", "llama3.1:8b"])
    hf = ScriptedProvider("hf", ["tiny", "SmolLM2-135M-Instruct"])
    registry.register(ollama)
    registry.register(hf)
    monitor = HealthMonitor(registry, interval_s=60, timeout_s=1)
    options = {"ttl_s": 30.0, "provider_timeout_s": 0.3, "stale_s": 300.0, **kwargs}
    if clock is not None:
        return ModelCatalog(registry, monitor, clock=clock, **options), ollama, hf
    return ModelCatalog(registry, monitor, **options), ollama, hf


async def test_stable_order_and_available_model_names() -> None:
    catalog, _, _ = make_catalog()
    assert [m.name for m in await catalog.models()] == [
        "ollama/llama3.1:8b",
        "ollama/mistral:7b",
        "hf/SmolLM2-135M-Instruct",
        "hf/tiny",
    ]
    # Ollama models by their bare names, as the old service listed them; hf models with their prefix
    assert await catalog.available_model_names() == ["llama3.1:8b", "mistral:7b", "hf/SmolLM2-135M-Instruct", "hf/tiny"]


async def test_one_provider_down_and_one_slow_never_block_or_empty_the_list() -> None:
    catalog, ollama, hf = make_catalog()
    ollama.list_error = unavailable("ollama")
    hf.list_gate = asyncio.Event()  # hf never answers until opened
    # the stuck provider is cut off at its timeout: the listing ends while hf is still stuck
    assert await asyncio.wait_for(catalog.models(), timeout=10) == []
    assert "did not list its models" in (
        next(s for s in await catalog.providers() if s.name == "hf").listing_error or ""
    )
    hf.list_gate.set()
    catalog.invalidate()
    await catalog.refresh()
    assert [m.provider for m in await catalog.models()] == ["hf", "hf"]
    statuses = {s.name: s for s in await catalog.providers()}
    assert statuses["ollama"].listing_error == "ollama is down"
    assert statuses["ollama"].model_count == 0
    assert statuses["hf"].listing_error is None
    assert statuses["hf"].model_count == 2


async def test_a_failing_provider_keeps_its_last_good_list_while_stale() -> None:
    catalog, ollama, _ = make_catalog(stale_s=0.5)
    await catalog.refresh()
    ollama.list_error = unavailable("ollama")
    await catalog.refresh()
    assert len(await catalog.models(provider="ollama")) == 2
    assert next(s for s in await catalog.providers() if s.name == "ollama").stale

    # once stale_s has passed, the stale list goes
    async def gone() -> bool:
        return await catalog.models(provider="ollama") == []

    await wait_until_async(gone, within_s=5)


async def test_serves_the_cached_list_while_refreshing_in_the_background() -> None:
    clock = ManualClock()
    catalog, ollama, _ = make_catalog(clock, ttl_s=30)
    await catalog.current()
    ollama.models = ["new:1b"]
    ollama.list_gate = asyncio.Event()  # the refresh cannot finish until the test opens it
    clock.now += 31  # past the TTL
    # the old list comes back while the refresh is still stuck: nobody waits for it
    names = [m.native_name for m in await asyncio.wait_for(catalog.models(provider="ollama"), timeout=10)]
    assert names == ["llama3.1:8b", "mistral:7b"]
    ollama.list_gate.set()

    async def refreshed() -> bool:
        return [m.native_name for m in await catalog.models(provider="ollama")] == ["new:1b"]

    await wait_until_async(refreshed, within_s=5)


async def test_search_by_substring_and_close_spelling_and_filters() -> None:
    catalog, _, _ = make_catalog()
    assert [m.name for m in await catalog.models(search="llama")] == ["ollama/llama3.1:8b"]
    assert [m.name for m in await catalog.models(search="smollm")] == ["hf/SmolLM2-135M-Instruct"]
    assert [m.name for m in await catalog.models(search="mistrl:7b")] == ["ollama/mistral:7b"]
    assert [m.name for m in await catalog.models(provider="hf/")] == ["hf/SmolLM2-135M-Instruct", "hf/tiny"]
    assert await catalog.models(capability="vision") == []
    assert len(await catalog.models(capability="text", loaded=False)) == 4
    with pytest.raises(ServiceError) as caught:
        await catalog.models(capability="smell")  # type: ignore[arg-type]
    assert caught.value.code == ErrorCode.INVALID_REQUEST


async def test_find_and_get_follow_the_routing_rules() -> None:
    catalog, _, _ = make_catalog()
    assert (await catalog.find("llama3.1:8b")).name == "ollama/llama3.1:8b"  # type: ignore[union-attr]
    assert (await catalog.find("tiny")).name == "hf/tiny"  # type: ignore[union-attr]
    assert await catalog.find("hf/missing") is None
    with pytest.raises(ServiceError) as caught:
        await catalog.get("hf/tin")
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND
    assert "hf/tiny" in caught.value.details["suggestions"]


async def test_health_monitor_reports_each_provider() -> None:
    catalog, ollama, _ = make_catalog()
    ollama.list_error = unavailable()
    assert catalog.monitor.latest("hf").status == "unknown"
    results = await catalog.monitor.check_all()
    assert {name: h.status for name, h in results.items()} == {"ollama": "unhealthy", "hf": "healthy"}
