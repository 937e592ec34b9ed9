"""Wire helpers shared by REST and GraphQL: one way to write dates and ids."""

from __future__ import annotations

from datetime import datetime

import msgspec


def epoch_ms(value: datetime) -> str:
    """Dates as epoch-millisecond digit strings, like the old service (graphql-js serialised pg Dates so)."""
    return str(int(value.timestamp() * 1000))


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    details: dict[str, object] = {}


class ErrorResponse(msgspec.Struct):
    """Every REST error: `{"error": {"code", "message", "details"}}`."""

    error: ErrorDetail
