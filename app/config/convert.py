"""Converters: one function per kind of setting, from a raw value (TOML or environment text) to its type.

Each raises ValueError with a sentence a person can act on; the caller adds the key, the value and the source.
Nothing here imports the engine: `execution_provider`'s CUDA probe imports ONNX Runtime only when asked for `cuda`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

EXECUTION_PROVIDERS = ("auto", "cpu", "cuda")
#: an API key given as a reference to an environment variable (`env:NAME`) rather than as the key itself
ENV_REFERENCE = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")
LOG_LEVELS = ("debug", "info", "warning", "error")


def to_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be a boolean (true/false, 1/0, yes/no, on/off)")


def to_int(low: int, high: int) -> Callable[[object], int]:
    def convert(raw: object) -> int:
        if isinstance(raw, bool):
            raise ValueError("must be an integer")
        try:
            value = int(str(raw).strip()) if not isinstance(raw, int) else raw
        except ValueError:
            raise ValueError("must be an integer") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return convert


def to_float(low: float, high: float) -> Callable[[object], float]:
    def convert(raw: object) -> float:
        if isinstance(raw, bool):
            raise ValueError("must be a number")
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return convert


def to_text(raw: object) -> str:
    return str(raw)


def to_path(raw: object) -> Path:
    text = str(raw).strip()
    if not text:
        raise ValueError("must not be empty")
    return Path(text).expanduser()


def to_optional_path(raw: object) -> Path | None:
    return to_path(raw) if str(raw).strip() else None


def to_choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def convert(raw: object) -> str:
        value = str(raw).strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return convert


def to_execution_provider(raw: object) -> str:
    """`auto`, `cpu` or `cuda`; `cuda` only where a CUDA session really opens, so that a machine without
    CUDA refuses the setting here instead of failing every request of the `hf` provider later."""
    value = to_choice(EXECUTION_PROVIDERS)(raw)
    if value == "cuda":
        # imported here: the probe opens an ONNX Runtime session, which only this value needs
        import onnxruntime

        from inference.execution import cuda_usable

        if not cuda_usable():
            listed = onnxruntime.get_available_providers()
            why = (
                "ONNX Runtime lists CUDAExecutionProvider but no CUDA session opens (no GPU, or no CUDA libraries)"
                if "CUDAExecutionProvider" in listed
                else f"this ONNX Runtime has no CUDA support (it offers {', '.join(listed)})"
            )
            raise ValueError(
                f"CUDA is not available on this machine: {why}; the providers available here are auto and cpu"
            )
    return value


def to_database_url(raw: object) -> str:
    value = str(raw).strip()
    if not value:
        return ""
    scheme = urlparse(value).scheme
    if scheme not in ("sqlite", "postgres", "postgresql"):
        raise ValueError("must start with sqlite:/// or postgresql://")
    if scheme == "sqlite" and not value.startswith("sqlite:///"):
        raise ValueError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
    return value


def to_http_url(raw: object) -> str:
    value = str(raw).strip().rstrip("/")
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http:// or https:// URL with a host")
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ValueError("must be a URL without spaces or control characters")
    return value


def to_optional_http_url(raw: object) -> str:
    return to_http_url(raw) if str(raw).strip() else ""


def to_origins(raw: object) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    origins = tuple(str(item).strip().rstrip("/") for item in items if str(item).strip())
    for origin in origins:
        if origin != "*" and urlparse(origin).scheme not in ("http", "https"):
            raise ValueError(f"{origin!r} is not an http(s) origin")
    return origins


def to_alias(raw: object) -> str:
    """An exported model's alias; `hf/<alias>` is accepted and its prefix dropped."""
    value = str(raw).strip().removeprefix("hf/")
    if not value or "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must be the alias of an exported model (a folder name in the models directory)")
    return value


def to_names(raw: object) -> tuple[str, ...]:
    """A comma-separated list (or a TOML array) of names (models, API keys), in order, without blanks or repeats."""
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    names: list[str] = []
    for item in items:
        name = str(item).strip()
        if name and name not in names:
            names.append(name)
    return tuple(names)


def strict_names(raw: object) -> tuple[str, ...]:
    """A table's list of model names: a TOML array of strings (or one comma-separated string), as `to_names`."""
    if isinstance(raw, str) or (isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw)):
        return to_names(raw)
    raise ValueError("must be a list of model names")


def to_host(raw: object) -> str:
    value = str(raw).strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def strict_bool(raw: object) -> bool:
    """A TOML/JSON boolean only (a table's `enabled`): text such as "yes" is refused."""
    if not isinstance(raw, bool):
        raise ValueError("must be true or false")
    return raw


def strict_text(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    return raw


def stop_sequences(raw: object) -> list[str]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
        raise ValueError("must be a string or a list of non-empty strings")
    return list(items)


def env_reference(value: object) -> str | None:
    """The variable an `env:NAME` value names, else None (the value is the secret itself)."""
    match = ENV_REFERENCE.fullmatch(value) if isinstance(value, str) else None
    return match.group(1) if match else None


def to_api_key(raw: object) -> str:
    """An API key, or `env:NAME` for one kept in the environment (which must then be set), so that a config
    file, the revision history and the API never need to hold the key itself."""
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    value = raw.strip()
    if value.startswith("env:"):
        name = env_reference(value)
        if name is None:
            raise ValueError("an environment reference is env:NAME, with NAME a variable name")
        if name not in os.environ:
            raise ValueError(f"names the environment variable {name}, which is not set")
    return value


def resolve_api_key(value: str, environ: Mapping[str, str] | None = None) -> str:
    """The key itself: an `env:NAME` reference read from the environment, any other value as it is."""
    name = env_reference(value)
    if name is None:
        return value
    return (os.environ if environ is None else environ).get(name, "")
