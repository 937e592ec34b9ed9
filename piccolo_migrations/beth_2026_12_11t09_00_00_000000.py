"""`fallback_from` on replies and stream sessions: the model that was asked for when a fallback answered instead.

Nullable, so every row written before keeps its meaning (no fallback recorded) and the old client's
queries, which never select it, are unchanged.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-11T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "the model a fallback reply was asked for"

NULLABLE_NAME = {
    "length": 255,
    "default": None,
    "null": True,
    "primary_key": False,
    "unique": False,
    "index": False,
    "index_method": IndexMethod.btree,
    "choices": None,
    "db_column_name": None,
    "secret": False,
}


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="beth", description=DESCRIPTION)
    for class_name, tablename in (("Message", "messages"), ("StreamSession", "stream_sessions")):
        manager.add_column(
            table_class_name=class_name,
            tablename=tablename,
            column_name="fallback_from",
            db_column_name="fallback_from",
            column_class_name="Varchar",
            column_class=Varchar,
            params=dict(NULLABLE_NAME),
            schema=None,
        )
    return manager
