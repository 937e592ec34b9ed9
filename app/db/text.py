"""What a text column can hold, on every database the service runs on.

PostgreSQL's text cannot hold NUL (U+0000): storing one fails, and so does comparing a column with one.
SQLite accepts it, so without one rule the two databases would answer the same request differently.
"""

from __future__ import annotations

NUL = "\x00"


def storable(*texts: str | None) -> bool:
    """Whether every text can be stored or looked up; a key that is not storable was never stored."""
    return not any(text and NUL in text for text in texts)


def without_nul(text: str) -> str:
    """A model's output made storable: a NUL means nothing in a chat reply."""
    return text.replace(NUL, "")
