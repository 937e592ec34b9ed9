"""`beth-chat db migrate` creates the schema on an empty database and is safe to run again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from piccolo.querystring import QueryString

from app.db.backends import create_engine
from app.db.tables import ALL_TABLES
from tests.fixtures.server import query_sql, run_sql


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


def migrate_up_to(url: str, workdir: Path, migration_id: str) -> None:
    """Apply the migrations up to `migration_id` only: the schema an older version left behind."""
    env = {**os.environ, "DATABASE_URL": url, "BETH_DATA_DIR": str(workdir / "data")}
    script = (
        "import asyncio\n"
        "from piccolo.apps.migrations.commands.forwards import run_forwards\n"
        "from app.db.engine import open_database\n"
        "async def main():\n"
        f"    await open_database({url!r})\n"
        f"    await run_forwards(app_name='beth', migration_id={migration_id!r})\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=workdir, env=env, check=True, timeout=120)


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


async def column_names(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    if url.startswith("sqlite"):
        rows = await engine.run_querystring(QueryString(f"PRAGMA table_info({table})"))
        return {row["name"] for row in rows}
    rows = await engine.run_querystring(
        QueryString("SELECT column_name AS name FROM information_schema.columns WHERE table_name = {}", table)
    )
    return {row["name"] for row in rows}


def test_migrate_gives_every_table_exactly_its_declared_columns(empty_database: str, tmp_path: Path) -> None:
    """The schema the migrations build is the one the table classes declare: no column left over, none missing."""
    result = migrate(empty_database, tmp_path)
    assert result.returncode == 0, result.stderr
    for table in ALL_TABLES:
        declared = {column._meta.db_column_name for column in table._meta.columns}
        assert asyncio.run(column_names(empty_database, table._meta.tablename)) == declared, table._meta.tablename


def test_migrate_reports_an_unreachable_database(tmp_path: Path) -> None:
    result = migrate("postgresql://postgres@127.0.0.1:1/nowhere", tmp_path)
    assert result.returncode != 0
    assert "beth-chat:" in result.stderr
    assert "Traceback" not in result.stderr


FIRST_MIGRATION = "2026-11-25T06:29:37:790114"
USAGE_ROW = (
    "INSERT INTO model_usage_stats (provider, model, period, period_start, requests, errors, cancelled,"
    " prompt_tokens, completion_tokens, total_duration_ms, total_time_to_first_token_ms, max_duration_ms,"
    " updated_at) VALUES ('ollama', '{model}', 'hour', '2026-12-01 10:00:00+00:00', {requests}, 1, 0, 10, 20,"
    " 100.0, 5.0, {longest}, '2026-12-01 10:00:00+00:00');"
)


def test_migrate_merges_usage_rows_that_racing_writers_duplicated(empty_database: str, tmp_path: Path) -> None:
    """Older versions could insert one period's usage row twice; the unique period key merges them first."""
    migrate_up_to(empty_database, tmp_path, FIRST_MIGRATION)
    run_sql(
        empty_database,
        USAGE_ROW.format(model="a", requests=2, longest=70.0)
        + USAGE_ROW.format(model="a", requests=3, longest=90.0)
        + USAGE_ROW.format(model="b", requests=1, longest=10.0),
    )
    result = migrate(empty_database, tmp_path)
    assert result.returncode == 0, result.stderr

    async def rows() -> list[dict]:
        engine = create_engine(empty_database)
        return await engine.run_querystring(
            QueryString(
                "SELECT model, requests, errors, prompt_tokens, total_duration_ms, max_duration_ms"
                " FROM model_usage_stats ORDER BY model"
            )
        )

    merged = [{k: float(v) if k != "model" else v for k, v in row.items()} for row in asyncio.run(rows())]
    assert merged == [
        {
            "model": "a",
            "requests": 5,
            "errors": 2,
            "prompt_tokens": 20,
            "total_duration_ms": 200,
            "max_duration_ms": 90,
        },
        {
            "model": "b",
            "requests": 1,
            "errors": 1,
            "prompt_tokens": 10,
            "total_duration_ms": 100,
            "max_duration_ms": 10,
        },
    ]
    with pytest.raises(Exception, match=r"(?i)unique"):  # the key now holds
        run_sql(empty_database, USAGE_ROW.format(model="b", requests=1, longest=10.0))


BEFORE_PROVIDER_CONFIGS = "2026-12-03T10:15:00:000000"
PROVIDER_ROW = (
    "INSERT INTO provider_configs (name, kind, display_name, enabled, settings, created_at, updated_at)"
    " VALUES ('{name}', '{kind}', '{name}', true, '{settings}', '2026-12-01 10:00:00+00:00',"
    " '2026-12-01 10:00:00+00:00');"
)


def test_migrate_drops_the_placeholder_provider_rows_and_keeps_stored_tables(
    empty_database: str, tmp_path: Path
) -> None:
    """Older versions wrote a row named after each listed provider, with empty settings, that nothing read."""
    migrate_up_to(empty_database, tmp_path, BEFORE_PROVIDER_CONFIGS)
    table = '{"type": "ollama", "host": "http://10.0.0.5:11434"}'
    run_sql(
        empty_database,
        PROVIDER_ROW.format(name="ollama", kind="ollama", settings="{}")
        + PROVIDER_ROW.format(name="hf", kind="hf", settings="{}")
        + PROVIDER_ROW.format(name="gpu-box", kind="ollama", settings=table),
    )
    result = migrate(empty_database, tmp_path)
    assert result.returncode == 0, result.stderr
    assert query_sql(empty_database, "SELECT name, kind FROM provider_configs") == [("gpu-box", "ollama")]
