"""`beth-chat db migrate` creates the schema on an empty database and is safe to run again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from piccolo.querystring import QueryString

from app.db.engine import create_engine
from app.db.tables import ALL_TABLES
from tests.fixtures.server import create_postgres_database, drop_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


def migrate(url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "BETH_DATA_DIR": str(workdir / "data")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "db", "migrate"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    if url.startswith("sqlite"):
        rows = await engine.run_querystring(QueryString("SELECT name FROM sqlite_master WHERE type = 'table'"))
        return {row["name"] for row in rows}
    rows = await engine.run_querystring(
        QueryString("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'")
    )
    return {row["name"] for row in rows}


def test_migrate_twice_creates_every_table_once(empty_database: str, tmp_path: Path) -> None:
    first = migrate(empty_database, tmp_path)
    assert first.returncode == 0, first.stderr
    tables = asyncio.run(table_names(empty_database))
    assert {table._meta.tablename for table in ALL_TABLES} <= tables
    second = migrate(empty_database, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "No migrations need to be run" in second.stdout
    assert asyncio.run(table_names(empty_database)) == tables


def test_migrate_reports_an_unreachable_database(tmp_path: Path) -> None:
    result = migrate("postgresql://postgres@127.0.0.1:1/nowhere", tmp_path)
    assert result.returncode != 0
    assert "beth-chat:" in result.stderr
    assert "Traceback" not in result.stderr
