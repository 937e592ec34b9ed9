"""Configuration documents: the one TOML reader, the one writer, and layering.

A document is the TOML shape: service keys (top level or under `[service]`), `[models."<name>"]` tables and
`[providers.<name>]` tables. Start-up (`load_settings`), the hot reload, validation and restore all read through
`parse_toml`, so the file means the same thing everywhere.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.config.settings import SettingsError

Document = dict[str, Any]
TABLES: tuple[str, ...] = ("models", "providers")


def parse_toml(text: str, key: str = "config") -> Document:
    """A TOML text as a document; a syntax error is a SettingsError naming `key` (the file's setting)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(key, text[:60], f"not valid TOML: {exc}", "file") from None
    return normalize(data)


def normalize(data: Mapping[str, Any]) -> Document:
    """Flatten an optional `[service]` table; keep `models` and `providers`; other tables are other
    services' business."""
    service = data.get("service", data)
    if not isinstance(service, Mapping):
        raise SettingsError("service", service, "must be a table", "file")
    document: Document = {key: value for key, value in service.items() if not isinstance(value, Mapping)}
    for key in TABLES:
        tables = data.get(key, {})
        if not isinstance(tables, Mapping):
            raise SettingsError(key, tables, f"must be a table of {key[:-1]} tables", "file")
        if tables:
            document[key] = {
                str(name): dict(table) if isinstance(table, Mapping) else table for name, table in tables.items()
            }
    return document


def read_toml(path: Path) -> Document:
    """The document in a file; unreadable or invalid TOML is a SettingsError naming `BETH_CONFIG`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError("BETH_CONFIG", str(path), f"cannot read the TOML file: {exc}", "file") from exc
    try:
        return parse_toml(text, "BETH_CONFIG")
    except SettingsError as exc:
        if exc.key == "BETH_CONFIG":
            raise SettingsError("BETH_CONFIG", str(path), f"cannot read the TOML file: {exc.reason}", "file") from None
        raise


def snake_case(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def merge(base: Document, changes: Mapping[str, Any]) -> Document:
    """`changes` over `base`, tables merged key by key; a None value removes the key (none there: no-op)."""
    result = dict(base)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            # a table where there was none merges over an empty one, so the Nones inside it remove nothing
            previous = result.get(key)
            result[key] = merge(previous if isinstance(previous, Mapping) else {}, value)
        else:
            result[key] = value
    return result


def plain(value: Any) -> Any:
    """JSON/TOML-friendly: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    return value


def to_toml(document: Mapping[str, Any]) -> str:
    """A small TOML writer for our documents: scalars, string lists, and the models' and providers' tables."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in document.items() if key not in TABLES]
    for name, table in document.get("providers", {}).items():
        lines += ["", f"[providers.{_toml_string(name)}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    for name, table in document.get("models", {}).items():
        lines += ["", f"[models.{_toml_string(name)}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if key != "options"]
        if table.get("options"):
            lines += ["", f"[models.{_toml_string(name)}.options]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in table["options"].items()]
    return "\n".join(lines) + "\n"


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return _toml_string(str(plain(value)))
