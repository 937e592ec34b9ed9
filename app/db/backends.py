"""The two database backends and the engine for a database URL.

Kept apart from `app.db.engine` (which binds the engine into Piccolo's configuration module) so that
`app.db.piccolo_conf` can build its default engine without importing the module that imports it back.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, SQLiteTransaction, TransactionType

#: how long a SQLite writer waits for another's lock before failing with `database is locked`
SQLITE_BUSY_TIMEOUT_S = 30


class WritingSQLiteEngine(SQLiteEngine):
    """SQLite whose transactions take the write lock when they begin (`BEGIN IMMEDIATE`).

    A deferred transaction that reads and then writes must upgrade its lock; when another writer holds
    it, SQLite fails at once with `database is locked` instead of waiting for the busy timeout. Every
    transaction this service opens writes, so each starts as a writer and waits its turn instead.
    """

    def transaction(
        self, transaction_type: TransactionType = TransactionType.immediate, allow_nested: bool = True
    ) -> SQLiteTransaction:
        return super().transaction(transaction_type=transaction_type, allow_nested=allow_nested)


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative/file` or `sqlite:////absolute/file` -> the file's path."""
    return Path(unquote(url.removeprefix("sqlite:///")))


def create_engine(url: str) -> Engine:
    """An engine for a `sqlite:///...` or `postgresql://...` URL; the SQLite file's folder is created."""
    if url.startswith("sqlite:///"):
        path = sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A busy timeout lets concurrent writers wait for the lock instead of failing at once.
        return WritingSQLiteEngine(path=str(path), timeout=SQLITE_BUSY_TIMEOUT_S)
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        return PostgresEngine(config={"dsn": url})
    raise ValueError(f"unsupported database URL scheme: {parsed.scheme!r}")
