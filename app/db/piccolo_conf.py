"""Piccolo's configuration module (`PICCOLO_CONF=app.db.piccolo_conf`).

`DB` starts from the settings so the `piccolo` CLI works on its own; the service replaces it through
`app.db.engine.use_database` with the engine it opened.
"""

from piccolo.conf.apps import AppRegistry
from piccolo.engine.base import Engine

from app.config.load import load_settings
from app.db.backends import create_engine

DB: Engine = create_engine(load_settings().effective_database_url)

APP_REGISTRY = AppRegistry(apps=["app.db.piccolo_app"])
