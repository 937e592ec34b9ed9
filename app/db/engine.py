"""Open the database for a URL and bind every table (and Piccolo's migration table) to it.

Piccolo finds its engine through a `piccolo_conf` module; `use_database` sets that module's `DB`
too, so the service, the migration runner and the `piccolo` CLI all talk to the same database.
"""

from __future__ import annotations

import logging
import os

from piccolo.apps.migrations.tables import Migration
from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine

from app.db.backends import create_engine
from app.db.tables import ALL_TABLES

log = logging.getLogger(__name__)

PICCOLO_CONF_MODULE = "app.db.piccolo_conf"


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
    elif isinstance(engine, SQLiteEngine):
        await _use_wal(engine)
    return engine


async def _use_wal(engine: SQLiteEngine) -> None:
    """Write-ahead logging (a property of the file, kept across restarts): readers never block the writer
    and the writer never blocks readers, so only writers queue for the lock."""
    rows = await engine.run_ddl("PRAGMA journal_mode=WAL")
    mode = rows[0].get("journal_mode") if rows else None
    if mode != "wal":
        log.warning("SQLite stays in %s journal mode (the file system may not support WAL)", mode)


async def close_database(engine: Engine) -> None:
    if isinstance(engine, PostgresEngine):
        await engine.close_connection_pool()


async def ping(engine: Engine) -> None:
    """A cheap round trip; raises when the database cannot be reached."""
    await engine.run_ddl("SELECT 1")
