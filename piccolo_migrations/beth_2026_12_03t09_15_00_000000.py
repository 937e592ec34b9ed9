"""One usage row per (provider, model, period, period start), so a generation is counted with one upsert.

Rows that racing writers duplicated are merged into the oldest one first; then a unique index (which
SQLite and PostgreSQL both accept as an `ON CONFLICT` target) keeps it that way.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-03T09:15:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "unique usage period rows"

KEY = "provider, model, period, period_start"
SAME_KEY = (
    "d.provider = model_usage_stats.provider AND d.model = model_usage_stats.model"
    " AND d.period = model_usage_stats.period AND d.period_start = model_usage_stats.period_start"
)
SUMMED = (
    "requests",
    "errors",
    "cancelled",
    "prompt_tokens",
    "completion_tokens",
    "total_duration_ms",
    "total_time_to_first_token_ms",
)
KEEPERS = f"SELECT MIN(id) FROM model_usage_stats GROUP BY {KEY}"

FORWARDS = (
    "UPDATE model_usage_stats SET "
    + ", ".join(f"{c} = (SELECT SUM(d.{c}) FROM model_usage_stats d WHERE {SAME_KEY})" for c in SUMMED)
    + f", max_duration_ms = (SELECT MAX(d.max_duration_ms) FROM model_usage_stats d WHERE {SAME_KEY})"
    + f" WHERE id IN (SELECT MIN(id) FROM model_usage_stats GROUP BY {KEY} HAVING COUNT(*) > 1)",
    f"DELETE FROM model_usage_stats WHERE id NOT IN ({KEEPERS})",
    f"CREATE UNIQUE INDEX model_usage_stats_period_key ON model_usage_stats ({KEY})",
)
BACKWARDS = ("DROP INDEX model_usage_stats_period_key",)


async def _run(statements: tuple[str, ...]) -> None:
    engine = engine_finder()
    assert engine is not None
    for statement in statements:
        await engine.run_ddl(statement)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="beth", description=DESCRIPTION)

    async def merge_and_index() -> None:
        await _run(FORWARDS)

    async def drop_index() -> None:
        await _run(BACKWARDS)

    manager.add_raw(merge_and_index)
    manager.add_raw_backwards(drop_index)
    return manager
