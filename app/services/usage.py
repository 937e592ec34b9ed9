"""Usage statistics: every generation is counted per model, per hour and per day, in `model_usage_stats`.

One row per (provider, model, period, period start) holds running sums, so a report is a cheap sum over
rows however many requests there were. A row is updated in a transaction; should two replicas race
and insert the same period twice, the report still sums them correctly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from app.db.tables import ModelUsageStats
from app.db.text import storable

Period = Literal["hour", "day"]
PERIODS: tuple[Period, ...] = ("hour", "day")


@dataclass(frozen=True)
class UsageRecord:
    """One finished generation. `status` is complete, partial (stopped) or failed."""

    provider: str
    model: str
    status: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token_ms: float | None = None
    duration_ms: float = 0.0
    error_code: str | None = None


@dataclass(frozen=True)
class UsageRow:
    provider: str
    model: str
    period_start: datetime
    requests: int
    errors: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    total_duration_ms: float
    total_time_to_first_token_ms: float
    max_duration_ms: float

    @property
    def average_duration_ms(self) -> float:
        return self.total_duration_ms / self.requests if self.requests else 0.0

    @property
    def average_time_to_first_token_ms(self) -> float:
        return self.total_time_to_first_token_ms / self.requests if self.requests else 0.0


def period_start(moment: datetime, period: Period) -> datetime:
    start = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return start.replace(hour=0) if period == "day" else start


class UsageStats:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def record(self, record: UsageRecord, at: datetime | None = None) -> None:
        """Add one generation to its hour and its day."""
        moment = at or datetime.now(UTC)
        async with self._lock:
            for period in PERIODS:
                await self._add(record, period, period_start(moment, period))

    async def _add(self, record: UsageRecord, period: Period, start: datetime) -> None:
        key = (
            (ModelUsageStats.provider == record.provider)
            & (ModelUsageStats.model == record.model)
            & (ModelUsageStats.period == period)
            & (ModelUsageStats.period_start == start)
        )
        failed = int(record.status == "failed")
        cancelled = int(record.status == "partial")
        async with ModelUsageStats._meta.db.transaction():
            row = await ModelUsageStats.objects().where(key).first()
            if row is None:
                await ModelUsageStats.insert(
                    ModelUsageStats(
                        provider=record.provider,
                        model=record.model,
                        period=period,
                        period_start=start,
                        requests=1,
                        errors=failed,
                        cancelled=cancelled,
                        prompt_tokens=record.prompt_tokens,
                        completion_tokens=record.completion_tokens,
                        total_duration_ms=record.duration_ms,
                        total_time_to_first_token_ms=record.time_to_first_token_ms or 0.0,
                        max_duration_ms=record.duration_ms,
                        updated_at=datetime.now(UTC),
                    )
                )
                return
            await ModelUsageStats.update(
                {
                    ModelUsageStats.requests: row.requests + 1,
                    ModelUsageStats.errors: row.errors + failed,
                    ModelUsageStats.cancelled: row.cancelled + cancelled,
                    ModelUsageStats.prompt_tokens: row.prompt_tokens + record.prompt_tokens,
                    ModelUsageStats.completion_tokens: row.completion_tokens + record.completion_tokens,
                    ModelUsageStats.total_duration_ms: row.total_duration_ms + record.duration_ms,
                    ModelUsageStats.total_time_to_first_token_ms: row.total_time_to_first_token_ms
                    + (record.time_to_first_token_ms or 0.0),
                    ModelUsageStats.max_duration_ms: max(row.max_duration_ms, record.duration_ms),
                    ModelUsageStats.updated_at: datetime.now(UTC),
                }
            ).where(ModelUsageStats.id == row.id)

    async def report(
        self,
        *,
        period: Period = "day",
        model: str | None = None,
        provider: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRow]:
        """Rows of `period`, newest first, filtered; duplicates of one period (from racing replicas) summed."""
        if not storable(model, provider):  # a name no row can have
            return []
        query = ModelUsageStats.objects().where(ModelUsageStats.period == period)
        if model:
            query = query.where(ModelUsageStats.model == model)
        if provider:
            query = query.where(ModelUsageStats.provider == provider)
        if since:
            query = query.where(ModelUsageStats.period_start >= period_start(since, period))
        if until:
            query = query.where(ModelUsageStats.period_start < until)
        return _merge(await query)


def _merge(rows: Sequence[ModelUsageStats]) -> list[UsageRow]:
    merged: dict[tuple[str, str, datetime], UsageRow] = {}
    for row in rows:
        key = (row.provider, row.model, row.period_start)
        seen = merged.get(key)
        merged[key] = UsageRow(
            provider=row.provider,
            model=row.model,
            period_start=row.period_start,
            requests=row.requests + (seen.requests if seen else 0),
            errors=row.errors + (seen.errors if seen else 0),
            cancelled=row.cancelled + (seen.cancelled if seen else 0),
            prompt_tokens=row.prompt_tokens + (seen.prompt_tokens if seen else 0),
            completion_tokens=row.completion_tokens + (seen.completion_tokens if seen else 0),
            total_duration_ms=row.total_duration_ms + (seen.total_duration_ms if seen else 0.0),
            total_time_to_first_token_ms=row.total_time_to_first_token_ms
            + (seen.total_time_to_first_token_ms if seen else 0.0),
            max_duration_ms=max(row.max_duration_ms, seen.max_duration_ms if seen else 0.0),
        )
    return sorted(merged.values(), key=lambda r: (-r.period_start.timestamp(), r.provider, r.model))


DEFAULT_WINDOW = {"hour": timedelta(days=2), "day": timedelta(days=31)}
