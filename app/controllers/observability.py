"""`GET /metrics` (Prometheus) and `GET /api/v1/usage` (per-model usage by hour or day)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.params import Parameter

from app.errors import invalid
from app.openapi import errors
from app.schemas.usage import UsageReport, UsageRowOut, UsageTotals
from app.services.usage import DEFAULT_WINDOW, UsageStats


def _instant(raw: str | None, name: str) -> datetime | None:
    """Epoch milliseconds (as every date this API writes) or ISO 8601."""
    if not raw:
        return None
    try:
        if raw.isdigit():
            return datetime.fromtimestamp(int(raw) / 1000, UTC)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):  # not a date, or one past what a timestamp can hold
        raise invalid(f"{name} must be epoch milliseconds or an ISO 8601 date", field=name) from None


class ObservabilityController(Controller):
    tags = ("observability",)

    @get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics(self, state: State) -> Response[bytes]:
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @get("/api/v1/usage", summary="Usage per model and hour or day", responses=errors(400))
    async def usage(
        self,
        usage: UsageStats,
        period: Literal["hour", "day"] = "day",
        model: str | None = None,
        provider: str | None = None,
        since: Annotated[str | None, Parameter(description="epoch ms or ISO 8601")] = None,
        until: Annotated[str | None, Parameter(description="epoch ms or ISO 8601")] = None,
    ) -> UsageReport:
        start = _instant(since, "since") or datetime.now(UTC) - DEFAULT_WINDOW[period]
        rows = await usage.report(
            period=period, model=model, provider=provider, since=start, until=_instant(until, "until")
        )
        totals = UsageTotals(
            requests=sum(r.requests for r in rows),
            errors=sum(r.errors for r in rows),
            cancelled=sum(r.cancelled for r in rows),
            prompt_tokens=sum(r.prompt_tokens for r in rows),
            completion_tokens=sum(r.completion_tokens for r in rows),
        )
        return UsageReport(period=period, rows=[UsageRowOut.of(r) for r in rows], totals=totals)
