"""Choose the database engine from a URL and bind every table (and Piccolo's migration table) to it.

Piccolo finds its engine through a `piccolo_conf` module; `use_database` sets that module's `DB`
too, so the service, the migration runner and the `piccolo` CLI all talk to the same database.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from piccolo.apps.migrations.tables import Migration
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine

from app.db.tables import ALL_TABLES

PICCOLO_CONF_MODULE = "app.db.piccolo_conf"


def sqlite_path(url: str) -> Path:
    """`sqlite:///relative/file` or `sqlite:////absolute/file` -> the file's path."""
    return Path(unquote(url.removeprefix("sqlite:///")))


def create_engine(url: str) -> Engine:
    """An engine for a `sqlite:///...` or `postgresql://...` URL; the SQLite file's folder is created."""
    if url.startswith("sqlite:///"):
        path = sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A busy timeout lets concurrent writers wait for the lock instead of failing at once.
        return SQLiteEngine(path=str(path), timeout=30)
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        return PostgresEngine(config={"dsn": url})
    raise ValueError(f"unsupported database URL scheme: {parsed.scheme!r}")


def use_database(engine: Engine) -> None:
    """Make `engine` the one every table and Piccolo's own machinery uses in this process."""
    import app.db.piccolo_conf as conf

    os.environ["PICCOLO_CONF"] = PICCOLO_CONF_MODULE
    conf.DB = engine
    for table in (*ALL_TABLES, Migration):
        table._meta.db = engine


async def open_database(url: str) -> Engine:
    """Create, bind and (for PostgreSQL) pool the engine for `url`."""
    engine = create_engine(url)
    use_database(engine)
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(min_size=1, max_size=10)
    return engine


async def close_database(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.close_connection_pool()


async def ping(engine: Engine) -> None:
    """A cheap round trip; raises when the database cannot be reached."""
    await engine.run_ddl("SELECT 1")
