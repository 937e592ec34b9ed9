"""The service's front door: `/` (as the old service answered), liveness and readiness."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec
from litestar import Controller, Response, get

from app.config.snapshot import ConfigSource
from app.openapi import body
from app.schemas.models import Health
from app.services.health_monitor import HealthMonitor


class Welcome(msgspec.Struct, rename="camel"):
    message: str
    graphql_endpoint: str
    playground: str
    protocol: str
    https_enabled: bool


class Liveness(msgspec.Struct):
    status: str
    timestamp: str
    protocol: str


class Check(msgspec.Struct):
    ok: bool
    latency_ms: float
    detail: str = ""


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, Check]
    #: each model provider's last health check; informative only: a down Ollama never makes the
    #: service unready (the embedded models still answer), it shows here as unhealthy
    providers: dict[str, Health] = {}


class HealthController(Controller):
    path = "/"
    tags = ("health",)

    @get("/", summary="Welcome (same shape as the old service)")
    async def welcome(self, config: ConfigSource) -> Welcome:
        https = config.settings.https
        protocol = "HTTPS" if https else "HTTP"
        return Welcome(
            message="Welcome to Beth LLM Chat Service!",
            graphql_endpoint="/graphql",
            playground="/graphql",
            protocol=protocol,
            https_enabled=https,
        )

    @get("/health", summary="Liveness: the process answers")
    async def liveness(self, config: ConfigSource) -> Liveness:
        return Liveness(
            status="OK",
            timestamp=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            protocol="HTTPS" if config.settings.https else "HTTP",
        )

    @get(
        "/health/ready",
        summary="Readiness: the database answers; providers' health is reported beside it",
        responses={503: body(Readiness, "The database does not answer")},
    )
    async def readiness(
        self, ping_database: Callable[[], Awaitable[object]], monitor: HealthMonitor
    ) -> Response[Readiness]:
        started = time.perf_counter()
        try:
            await ping_database()
            database = Check(ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2))
        except Exception as exc:
            database = Check(
                ok=False, latency_ms=round((time.perf_counter() - started) * 1000, 2), detail=type(exc).__name__
            )
        ready = database.ok
        providers = {name: Health.of(health) for name, health in monitor.all_latest().items()}
        return Response(
            Readiness(status="ready" if ready else "unavailable", checks={"database": database}, providers=providers),
            status_code=200 if ready else 503,
        )
