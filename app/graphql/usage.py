"""GraphQL `usage(period, model, provider)`: the same per-model report as `GET /api/v1/usage`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry
from strawberry.types import Info

from app.errors import invalid
from app.schemas.usage import UsageRowOut
from app.services.usage import DEFAULT_WINDOW, PERIODS, UsageRow


@strawberry.type
class UsageStat:
    provider: str
    model: str
    period_start: str
    requests: int
    errors: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    average_duration_ms: float
    average_time_to_first_token_ms: float

    @classmethod
    def of(cls, row: UsageRow) -> UsageStat:
        """The REST row's view (one rounding, one date format), without the fields this type lacks."""
        out = UsageRowOut.of(row)
        return cls(**{name: getattr(out, name) for name in cls.__annotations__})


async def resolve_usage(
    info: Info[Any, None], period: str = "day", model: str | None = None, provider: str | None = None
) -> list[UsageStat]:
    """Usage per model for the last 2 days (hours) or 31 days (days)."""
    if period not in PERIODS:
        raise invalid("period must be hour or day", field="period")
    usage = info.context.usage
    rows = await usage.report(
        period=period, model=model, provider=provider, since=datetime.now(UTC) - DEFAULT_WINDOW[period]
    )
    return [UsageStat.of(row) for row in rows]
