"""Usage statistics: every generation is counted per model, per hour and per day, in `model_usage_stats`.

One row per (provider, model, period, period start) holds running sums, so a report is a cheap sum over
rows however many requests there were. A unique index on that key lets each generation be added with
one `INSERT ... ON CONFLICT DO UPDATE` per row: no read-then-write, so concurrent writers (other
requests, other replicas) neither lose updates nor deadlock on a lock upgrade.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from app.db.tables import ModelUsageStats
from app.db.text import equals_text

log = logging.getLogger(__name__)

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
    #: whether `model` started the reply; False when no model could (then `model` is the one asked for)
    answered: bool = True


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


_SUMMED = (
    "requests",
    "errors",
    "cancelled",
    "prompt_tokens",
    "completion_tokens",
    "total_duration_ms",
    "total_time_to_first_token_ms",
)
#: add one generation to its row, creating the row if it is the period's first (SQLite and PostgreSQL)
_UPSERT = (
    "INSERT INTO model_usage_stats (provider, model, period, period_start, requests, errors, cancelled,"
    " prompt_tokens, completion_tokens, total_duration_ms, total_time_to_first_token_ms, max_duration_ms,"
    " updated_at) VALUES ({}, {}, {}, {}, 1, {}, {}, {}, {}, {}, {}, {}, {})"
    " ON CONFLICT (provider, model, period, period_start) DO UPDATE SET "
    + ", ".join(f"{c} = model_usage_stats.{c} + excluded.{c}" for c in _SUMMED)
    + ", max_duration_ms = CASE WHEN excluded.max_duration_ms > model_usage_stats.max_duration_ms"
    " THEN excluded.max_duration_ms ELSE model_usage_stats.max_duration_ms END"
    ", updated_at = excluded.updated_at"
)


def period_start(moment: datetime, period: Period) -> datetime:
    start = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return start.replace(hour=0) if period == "day" else start


class UsageStats:
    """Counts generations; a write the database refuses is retried, then kept in memory and retried later.

    The later retries are `run`, a loop the composition's background tasks own, so shutdown stops it with the rest.
    """

    def __init__(self, *, attempts: int = 4, backoff_s: float = 0.05, retry_later_s: float = 2.0) -> None:
        self._lock = asyncio.Lock()
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._retry_later_s = retry_later_s
        #: records not written yet (oldest first), with the moment they happened
        self._pending: deque[tuple[UsageRecord, datetime]] = deque()
        #: set while the database refuses writes: the retry loop owns the queue until it drains
        self._refused = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def record(self, record: UsageRecord, at: datetime | None = None) -> None:
        """Add one generation to its hour and its day; never raises and never drops it."""
        self._pending.append((record, at or datetime.now(UTC)))
        if self._refused.is_set():
            return  # the database is refusing writes: the retry loop writes this one too, in order
        await self._drain()

    async def run(self) -> None:
        """The retry loop: after a refusal, waits `retry_later_s` and writes the queue again, until it drains."""
        while True:
            await self._refused.wait()
            await asyncio.sleep(self._retry_later_s)
            self._refused.clear()  # so a failure now asks for the next try
            await self._drain()

    async def close(self) -> None:
        """Shutdown (after the retry loop stopped): one last try; what the database still refuses is logged."""
        await self._drain(retry_later=False)
        for record, moment in self._pending:
            log.error("usage of a generation abandoned at shutdown (database refused it): %s at %s", record, moment)
        self._pending.clear()

    async def _drain(self, *, retry_later: bool = True) -> None:
        async with self._lock:
            while self._pending:
                record, moment = self._pending[0]
                if not await self._write_with_retries(record, moment):
                    if retry_later:
                        self._refused.set()
                    return
                self._pending.popleft()

    async def _write_with_retries(self, record: UsageRecord, moment: datetime) -> bool:
        for attempt in range(self._attempts):
            try:
                await self._write(record, moment)
                return True
            except Exception as exc:
                if attempt + 1 == self._attempts:
                    log.warning(
                        "recording the usage of a generation failed %d times (%s); %d kept to retry later",
                        self._attempts, exc, len(self._pending),
                    )  # fmt: skip
                    return False
                await asyncio.sleep(self._backoff_s * 2**attempt)
        return False

    @staticmethod
    async def _write(record: UsageRecord, moment: datetime) -> None:
        """The hour row and the day row, each one atomic upsert, in one transaction (both or neither)."""
        failed = int(record.status == "failed")
        cancelled = int(record.status == "partial")
        async with ModelUsageStats._meta.db.transaction():
            for period in PERIODS:
                await ModelUsageStats.raw(
                    _UPSERT,
                    record.provider,
                    record.model,
                    period,
                    period_start(moment, period),
                    failed,
                    cancelled,
                    record.prompt_tokens,
                    record.completion_tokens,
                    record.duration_ms,
                    record.time_to_first_token_ms or 0.0,
                    record.duration_ms,
                    datetime.now(UTC),
                )

    async def report(
        self,
        *,
        period: Period = "day",
        model: str | None = None,
        provider: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageRow]:
        """Rows of `period`, newest first, filtered (rows of one period summed, should a database hold two)."""
        query = ModelUsageStats.objects().where(ModelUsageStats.period == period)
        if model:
            query = query.where(equals_text(ModelUsageStats.model, model))
        if provider:
            query = query.where(equals_text(ModelUsageStats.provider, provider))
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
