"""Drop `provider_configs.priority`: nothing ever read it (providers are tried in the configured fallback order)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

ID = "2026-12-03T10:15:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "drop the unused provider priority column"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="beth", description=DESCRIPTION)
    manager.drop_column(
        table_class_name="ProviderConfig",
        tablename="provider_configs",
        column_name="priority",
        db_column_name="priority",
        schema=None,
    )
    return manager
