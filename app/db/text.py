"""What a text column can hold, on every database the service runs on.

PostgreSQL's text cannot hold NUL (U+0000): storing one fails, and so does comparing a column with one.
SQLite accepts it, so without one rule the two databases would answer the same request differently.
Input that is stored is refused at the boundary (`app/schemas/boundary.py`); a text that is only looked up
(an id in a URL, a filter) is compared here, where a NUL simply matches nothing.
"""

from __future__ import annotations

from piccolo.columns import Column
from piccolo.columns.combination import Combinable, WhereRaw

NUL = "\x00"


def equals_text(column: Column, text: str) -> Combinable:
    """`column = text` on every database: a text no column can hold (a NUL) matches no row instead of failing."""
    return WhereRaw("1 = 0") if NUL in text else column == text


def without_nul(text: str) -> str:
    """A model's output made storable: a NUL means nothing in a chat reply."""
    return text.replace(NUL, "")
