"""msgspec Structs for `GET /api/v1/usage`."""

from __future__ import annotations

import msgspec

from app.schemas.common import epoch_ms
from app.services.usage import UsageRow


class UsageRowOut(msgspec.Struct, rename="camel"):
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
    max_duration_ms: float

    @classmethod
    def of(cls, row: UsageRow) -> UsageRowOut:
        return cls(
            provider=row.provider,
            model=row.model,
            period_start=epoch_ms(row.period_start),
            requests=row.requests,
            errors=row.errors,
            cancelled=row.cancelled,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            average_duration_ms=round(row.average_duration_ms, 2),
            average_time_to_first_token_ms=round(row.average_time_to_first_token_ms, 2),
            max_duration_ms=round(row.max_duration_ms, 2),
        )


class UsageTotals(msgspec.Struct, rename="camel"):
    requests: int
    errors: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int


class UsageReport(msgspec.Struct, rename="camel"):
    period: str
    rows: list[UsageRowOut]
    totals: UsageTotals
