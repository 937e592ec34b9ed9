"""One row of the reliability results table per test: what it ran and what the service held."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Row:
    scenario: str
    database: str
    streams: int = 0
    saved_exact: int | None = None  # replies stored byte-exact equal to what the client received
    usage_counted: int | None = None  # generations counted in /api/v1/usage (day and hour agreeing)
    errors: int = 0  # clients that saw an error event or a broken connection
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0
    passed: bool = True


ROWS: dict[str, Row] = {}
