"""Start-up settings: defaults < config file < environment < command-line flags, and which file that is."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from app.config.settings import KEYS, Settings, SettingsError, Source
from app.config.toml import TABLES, read_toml

DEFAULT_CONFIG_FILE = Path("beth.toml")


def config_file(environ: Mapping[str, str] | None = None) -> Path:
    """The configuration file: `BETH_CONFIG`, else `./beth.toml` (watched for changes even before it exists)."""
    env = os.environ if environ is None else environ
    return Path(env.get("BETH_CONFIG", "").strip() or DEFAULT_CONFIG_FILE).expanduser()


def _start_file(environ: Mapping[str, str]) -> Path | None:
    """The file start-up reads: a `BETH_CONFIG` that names no file stops start-up; a missing default is none."""
    path = config_file(environ)
    if environ.get("BETH_CONFIG", "").strip() and not path.is_file():
        raise SettingsError("BETH_CONFIG", environ["BETH_CONFIG"].strip(), "no such file", "env")
    return path if path.is_file() else None


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build `Settings` from defaults < TOML file < environment < explicit overrides (CLI flags).

    Unknown keys in the file are refused: a typo must not silently fall back to a default. The file's
    `[models]` and `[providers]` tables are the configuration service's business.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, tuple[object, Source]] = {}

    path = _start_file(env)
    if path is not None:
        for key, value in read_toml(path).items():
            if key in TABLES:
                continue
            if key not in KEYS:
                raise SettingsError(key, value, f"unknown key in {path}", "file")
            raw[key] = (value, "file")
    for key, row in KEYS.items():
        for name in row.env:
            if name in env:
                raw[key] = (env[name], "env")
                break
    for key, value in overrides.items():
        if value is not None:
            raw[key] = (value, "env")

    values: dict[str, object] = {}
    sources: dict[str, Source] = {}
    for key, (value, source) in raw.items():
        try:
            values[key] = KEYS[key].convert(value)
        except ValueError as exc:
            name = KEYS[key].env_name if source == "env" else key
            raise SettingsError(name, value, str(exc), source) from None
        sources[key] = source
    settings = replace(Settings(), **values, sources=sources)
    if (settings.tls_cert_path is None) != (settings.tls_key_path is None):
        raise SettingsError("TLS_CERT_PATH", settings.tls_cert_path, "set both TLS_CERT_PATH and TLS_KEY_PATH")
    return settings
