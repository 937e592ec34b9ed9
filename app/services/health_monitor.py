"""The background health monitor: asks every provider how it is, every `health_check_interval_s`.

Readiness, `/api/v1/providers` and the catalog show these results; nothing waits on a live check.
A check that hangs is cut off and reported unhealthy; it never stalls the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from app.providers.registry import ProviderRegistry
from app.providers.types import ProviderHealth

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(self, registry: ProviderRegistry, interval_s: float = 30.0, timeout_s: float = 5.0) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._latest: dict[str, ProviderHealth] = {}
        self._task: asyncio.Task[None] | None = None

    def latest(self, name: str) -> ProviderHealth:
        """The last result for provider `name` (`unknown` before the first check)."""
        return self._latest.get(name) or ProviderHealth(status="unknown", detail="not checked yet")

    def all_latest(self) -> dict[str, ProviderHealth]:
        return {p.name: self.latest(p.name) for p in self.registry.providers}

    async def check_all(self) -> dict[str, ProviderHealth]:
        providers = self.registry.providers
        results = await asyncio.gather(*(self._check(p.name) for p in providers))
        return dict(zip([p.name for p in providers], results, strict=True))

    async def _check(self, name: str) -> ProviderHealth:
        provider = self.registry.get(name)
        if provider is None:
            return ProviderHealth(status="unknown", detail="not registered")
        started = time.perf_counter()
        try:
            health = await asyncio.wait_for(provider.health_check(), self.timeout_s)
        except TimeoutError:
            health = ProviderHealth(status="unhealthy", detail=f"no answer to the health check in {self.timeout_s:g}s")
        except Exception as exc:
            log.warning("health check of %s raised", name, exc_info=exc)
            health = ProviderHealth(status="unhealthy", detail=f"health check failed: {type(exc).__name__}: {exc}")
        if health.latency_ms is None:
            health.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        previous = self._latest.get(name)
        if previous is None or previous.status != health.status:
            log.info("provider %s is %s: %s", name, health.status, health.detail)
        self._latest[name] = health
        return health

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="provider-health-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception:
                log.exception("provider health checks failed")
            await asyncio.sleep(self.interval_s)
