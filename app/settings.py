"""The entry to the service's settings (kept for callers that import `app.settings`); see `app.config`."""

from app.config.convert import EXECUTION_PROVIDERS, LOG_LEVELS, to_float, to_int
from app.config.load import config_file, load_settings
from app.config.settings import DEFAULT_CORS_ORIGINS, KEYS, Settings, SettingsError, Source

__all__ = [
    "DEFAULT_CORS_ORIGINS",
    "EXECUTION_PROVIDERS",
    "KEYS",
    "LOG_LEVELS",
    "Settings",
    "SettingsError",
    "Source",
    "config_file",
    "load_settings",
    "to_float",
    "to_int",
]
