"""The background health monitor: asks every provider how it is, every `health_check_interval_s`.

Readiness, `/api/v1/providers` and the catalog show these results; nothing waits on a live check.
A check that hangs is cut off and reported unhealthy; it never stalls the others.

Requests tell news sooner than the next check: a request that could not reach its provider (refused,
reset, cut off) reports it unhealthy at once, and a later request that succeeds reports it healthy
again. Whichever is newer, the last check or the last request, decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx

from app.errors import ErrorCode, ServiceError
from app.providers.circuit import Outcome
from app.providers.registry import ProviderRegistry
from app.providers.types import ProviderHealth

log = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(self, registry: ProviderRegistry, interval_s: float = 30.0, timeout_s: float = 5.0) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._latest: dict[str, ProviderHealth] = {}
        self._checked_at: dict[str, float] = {}  # monotonic time of each provider's last check

    def latest(self, name: str) -> ProviderHealth:
        """The last news of provider `name`: its last check, or a newer request's outcome (see module doc)."""
        checked = self._latest.get(name) or ProviderHealth(status="unknown", detail="not checked yet")
        outcome = self._last_outcome(name)
        if outcome is None or outcome.at <= self._checked_at.get(name, float("-inf")):
            return checked
        seen_at = datetime.now(UTC) - _seconds_ago(outcome.at)
        if outcome.error is None:
            if checked.status == "healthy":
                return checked
            return ProviderHealth(status="healthy", detail="a request succeeded", checked_at=seen_at)
        if not is_unreachable(outcome.error):
            return checked
        detail = outcome.error.message if isinstance(outcome.error, ServiceError) else type(outcome.error).__name__
        return ProviderHealth(status="unhealthy", detail=f"a request failed: {detail}", checked_at=seen_at)

    def _last_outcome(self, name: str) -> Outcome | None:
        if self.registry.get(name) is None:
            return None
        return self.registry.breaker(name).last_outcome

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
        previous = self.latest(name)
        if previous.status != health.status:
            log.info("provider %s is %s: %s", name, health.status, health.detail)
        self._latest[name] = health
        self._checked_at[name] = time.monotonic()
        return health

    async def run(self) -> None:
        """The background checks, until cancelled (the app's background tasks run it)."""
        while True:
            try:
                await self.check_all()
            except Exception:
                log.exception("provider health checks failed")
            await asyncio.sleep(self.interval_s)


#: transport failures that say a provider cannot be reached (a timeout only says it is slow)
_UNREACHABLE_CAUSES = (httpx.NetworkError, httpx.RemoteProtocolError, ConnectionError)


def is_unreachable(error: BaseException) -> bool:
    """Whether a failed request shows its provider is down, not merely busy, slow, or refusing the request."""
    if isinstance(error, ServiceError) and error.code == ErrorCode.PROVIDER_UNAVAILABLE:
        return True
    return isinstance(error.__cause__, _UNREACHABLE_CAUSES)


def _seconds_ago(at: float) -> timedelta:
    return timedelta(seconds=max(0.0, time.monotonic() - at))
