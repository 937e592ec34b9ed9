"""The Piccolo app `beth`: our tables, with migrations in the top-level `piccolo_migrations/` folder."""

from importlib.util import find_spec
from pathlib import Path

from piccolo.conf.apps import AppConfig

from app.db.tables import ALL_TABLES


def migrations_folder() -> Path:
    """The installed location of the `piccolo_migrations` package (editable or not)."""
    spec = find_spec("piccolo_migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the piccolo_migrations package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


APP_NAME = "beth"

APP_CONFIG = AppConfig(
    app_name=APP_NAME,
    migrations_folder_path=migrations_folder(),
    table_classes=list(ALL_TABLES),
    migration_dependencies=[],
    commands=[],
)
