"""Apply Piccolo migrations; safe to run any number of times (Piccolo records what already ran)."""

from __future__ import annotations

import contextlib
import io

from piccolo.apps.migrations.commands.forwards import run_forwards

from app.db.piccolo_app import APP_NAME


class MigrationError(RuntimeError):
    """A migration failed; the message holds Piccolo's reason."""


async def migrate(*, verbose: bool = False) -> str:
    """Run every pending migration of the `beth` app on the bound engine and return Piccolo's report."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        result = await run_forwards(app_name=APP_NAME, migration_id="all")
    report = output.getvalue()
    if verbose:
        print(report, end="")
    if not result.success:
        raise MigrationError(f"database migration failed: {result.message}\n{report}")
    return report
