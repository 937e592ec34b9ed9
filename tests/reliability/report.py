"""One row of the reliability results table per test: what it ran and what the service held."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Row:
    scenario: str
    database: str
    streams: int = 0
    #: replies stored as the client should find them: byte-exact equal to what it received (after a
    #: kill -9, the partial text flushed before the kill, saved once)
    saved_exact: int | None = None
    #: generations counted in /api/v1/usage, the smaller of the day and hour totals
    usage_counted: int | None = None
    #: clients whose stream did not end with `end` (an error event or a broken connection)
    errors: int = 0
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0
    result: str = "PASS"  # PASS | FAIL | SKIP


#: by test node id, in the order the tests ran
ROWS: dict[str, Row] = {}
