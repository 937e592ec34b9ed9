"""Drop the placeholder rows of `provider_configs`: until provider configurations were stored there, every
provider the catalog listed got a row named after itself (`kind` = `name`) with empty settings, which nothing read.
Stored configurations never have `kind` = `name`: their kind is a provider type, and no provider may be named
after one."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-10T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "drop the placeholder provider rows"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="beth", description=DESCRIPTION)

    async def drop_placeholders() -> None:
        engine = engine_finder()
        assert engine is not None
        await engine.run_ddl("DELETE FROM provider_configs WHERE kind = name")

    manager.add_raw(drop_placeholders)
    return manager
