"""A short, stable import path for scripts outside the service (`from app.settings import load_settings`).

The service itself imports `app.config`; this module only re-exports, and loads neither the engine nor the exporter.
"""

from app.config.load import load_settings
from app.config.settings import Settings, SettingsError

__all__ = ["Settings", "SettingsError", "load_settings"]
