"""The effective configuration as data: layered documents in, validated `EffectiveConfig` out.

Pure functions, no I/O, so validation, diffs, redaction and the TOML backup can be tested alone and
used both by the hot reload and by the API. Layers, lowest first: defaults < config file < API changes <
environment. The environment layer is what `load_settings` found at start-up with source `env` (CLI flags
included): it always wins, and the API refuses to override it.

A document is the TOML shape: service keys (top level or under `[service]`), `[models."<name>"]`
tables with `enabled`, `system_prompt`, `context_budget`, `keep_alive_s` and `[...options]`, and
`[providers.<name>]` tables for more provider hosts than the main Ollama (`type = "ollama"`, `host`, ...).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from app.providers.names import RESERVED_PREFIXES
from app.providers.types import GenerationOptions, ModelInfo
from app.services.model_settings import ModelSettings
from app.settings import CONVERTERS, ENV_NAMES, Settings, SettingsError, to_float, to_int

Document = dict[str, Any]
REDACTED = "***"
SETTING_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Settings) if f.name != "sources")
#: keys that only take effect at the next start: they shape the server, the database or objects built once
RESTART_KEYS: frozenset[str] = frozenset(
    {
        "data_dir",
        "database_url",
        "host",
        "port",
        "https_port",
        "https",
        "tls_cert_path",
        "tls_key_path",
        "cors_origins",
        "max_body_mb",
        "request_read_timeout_s",
        "bcrypt_rounds",
        "log_level",
        "log_format",
        "memory_min_available_mb",
        "memory_check_interval_s",
        "hf_auto_export_default",
        "stream_flush_interval_s",
        "stream_stale_s",
        "image_max_mb",
        "image_max_files",
        "image_retention_days",
        "health_check_interval_s",
        "circuit_failure_threshold",
        "circuit_cooldown_s",
        "catalog_ttl_s",
        "catalog_provider_timeout_s",
        "catalog_stale_s",
        "config_reload_interval_s",
        "beth_admin_token",
    }
)
#: keys the `hf` provider's model pool runs with (`model_services.hf_pool_settings`): all apply live
HF_POOL_KEYS: tuple[str, ...] = (
    "hf_execution_provider",
    "hf_num_threads",
    "hf_lookahead_tokens",
    "hf_memory_budget_mb",
    "hf_max_loaded_models",
    "hf_keep_alive_s",
    "hf_preload",
    "hf_max_batch_size",
    "hf_queue_length",
    "hf_queue_wait_s",
    "hf_prefix_cache_mb",
)
#: keys the Ollama provider is built from: a change builds a new provider and swaps it in
OLLAMA_KEYS: tuple[str, ...] = (
    "ollama_enabled",
    "ollama_host",
    "ollama_timeout_s",
    "ollama_num_ctx",
    "ollama_keep_alive_s",
)


# Range checks are the settings' own converters: one way to read a number.
_int, _float = to_int, to_float


def _bool(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise ValueError("must be true or false")
    return raw


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError("must be a string")
    return raw


def _stop(raw: object) -> list[str]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
        raise ValueError("must be a string or a list of non-empty strings")
    return list(items)


OPTION_CONVERTERS: dict[str, Callable[[object], Any]] = {
    "temperature": _float(0, 10),
    "top_p": _float(0, 1),
    "top_k": _int(0, 100_000),
    "max_tokens": _int(1, 1_000_000),
    "seed": _int(0, 2**63 - 1),
    "repetition_penalty": _float(0, 10),
    "stop": _stop,
}
MODEL_CONVERTERS: dict[str, Callable[[object], Any]] = {
    "enabled": _bool,
    "system_prompt": _text,
    "context_budget": _int(64, 10_000_000),
    "keep_alive_s": _float(-1, 86_400 * 365),
}


PROVIDER_TYPES: tuple[str, ...] = ("ollama",)
#: names the service gives its own providers (and `openai/`, reserved); a table may not take them
RESERVED_PROVIDER_NAMES: frozenset[str] = frozenset(prefix.rstrip("/") for prefix in RESERVED_PREFIXES)
PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _provider_type(raw: object) -> str:
    if raw not in PROVIDER_TYPES:
        raise ValueError(f"must be one of: {', '.join(PROVIDER_TYPES)}")
    return str(raw)


#: a `[providers.<name>]` table's keys; the Ollama ones check like the main Ollama's settings
PROVIDER_CONVERTERS: dict[str, Callable[[object], Any]] = {
    "type": _provider_type,
    "host": CONVERTERS["ollama_host"],
    "enabled": _bool,
    "timeout_s": CONVERTERS["ollama_timeout_s"],
    "num_ctx": CONVERTERS["ollama_num_ctx"],
    "keep_alive_s": CONVERTERS["ollama_keep_alive_s"],
}
PROVIDER_REQUIRED: tuple[str, ...] = ("type", "host")


@dataclass(frozen=True)
class ProviderTable:
    """One `[providers.<name>]` table, validated: another Ollama host, reached as `<name>/<model>`."""

    type: str
    host: str
    enabled: bool = True
    timeout_s: float = Settings.ollama_timeout_s
    num_ctx: int = Settings.ollama_num_ctx
    keep_alive_s: float = Settings.ollama_keep_alive_s


@dataclass(frozen=True)
class ModelConfig:
    """One `[models."<name>"]` table, validated."""

    enabled: bool = True
    system_prompt: str | None = None
    context_budget: int | None = None
    keep_alive_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def as_settings(self) -> ModelSettings:
        options = GenerationOptions(**self.options) if self.options else None
        return ModelSettings(
            enabled=self.enabled,
            system_prompt=self.system_prompt,
            options=options,
            context_budget=self.context_budget,
            keep_alive_s=self.keep_alive_s,
        )


@dataclass(frozen=True)
class EffectiveConfig:
    """What the service runs with: typed settings, per-model tables, and where each value came from."""

    settings: Settings
    models: Mapping[str, ModelConfig]
    sources: Mapping[str, str]
    model_sources: Mapping[str, str]
    file: Document
    api: Document
    providers: Mapping[str, ProviderTable] = field(default_factory=dict)
    provider_sources: Mapping[str, str] = field(default_factory=dict)

    def for_model(self, name: str, info: ModelInfo | None) -> ModelSettings:
        """The table for the prefixed name, the name as asked, or the provider's own name, in that order."""
        for key in (info.name if info else None, name, info.native_name if info else None):
            if key and key in self.models:
                return self.models[key].as_settings()
        return ModelSettings()


# -- documents ------------------------------------------------------------------------------------------


def parse_toml(text: str) -> Document:
    """A TOML text as a document; a syntax error is a SettingsError naming the file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("config", text[:60], f"not valid TOML: {exc}", "file") from None
    return normalize(data)


TABLES: tuple[str, ...] = ("models", "providers")


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


# -- validation -----------------------------------------------------------------------------------------


def document_errors(document: Mapping[str, Any], source: str) -> list[SettingsError]:
    """Every problem in one document (not just the first), each naming key, value and reason."""
    errors: list[SettingsError] = []
    for key, value in document.items():
        if key == "models":
            errors += _models_errors(value, source)
        elif key == "providers":
            errors += _providers_errors(value, source)
        elif key not in CONVERTERS:
            errors.append(SettingsError(key, value, "unknown key", source))
        else:
            try:
                CONVERTERS[key](value)
            except ValueError as exc:
                errors.append(SettingsError(key, value, str(exc), source))
    return errors


def _models_errors(models: object, source: str) -> list[SettingsError]:
    if not isinstance(models, Mapping):
        return [SettingsError("models", models, "must be a table of model tables", source)]
    errors: list[SettingsError] = []
    for name, table in models.items():
        prefix = f'models."{name}"'
        if not isinstance(table, Mapping):
            errors.append(SettingsError(prefix, table, "must be a table", source))
            continue
        if "options" in table:
            errors += _options_errors(f"{prefix}.options", table["options"], source)
        settings = {key: value for key, value in table.items() if key != "options"}
        errors += _keys_errors(prefix, settings, MODEL_CONVERTERS, source, also_known=("options",))
    return errors


def _providers_errors(providers: object, source: str) -> list[SettingsError]:
    if not isinstance(providers, Mapping):
        return [SettingsError("providers", providers, "must be a table of provider tables", source)]
    errors: list[SettingsError] = []
    for name, table in providers.items():
        prefix = f"providers.{name}"
        if name in RESERVED_PROVIDER_NAMES:
            reason = "is the service's own provider name; the main Ollama is set with the ollama_* keys"
            errors.append(SettingsError(prefix, name, reason, source))
            continue
        if not PROVIDER_NAME.match(str(name)):
            reason = "a provider name is lower-case letters, digits, - and _ (it becomes the model prefix)"
            errors.append(SettingsError(prefix, name, reason, source))
            continue
        if not isinstance(table, Mapping):
            errors.append(SettingsError(prefix, table, "must be a table", source))
            continue
        errors += [
            SettingsError(f"{prefix}.{key}", None, "is required", source)
            for key in PROVIDER_REQUIRED
            if key not in table
        ]
        errors += _keys_errors(prefix, table, PROVIDER_CONVERTERS, source)
    return errors


def _options_errors(prefix: str, options: object, source: str) -> list[SettingsError]:
    if not isinstance(options, Mapping):
        return [SettingsError(prefix, options, "must be a table", source)]
    return _keys_errors(prefix, options, OPTION_CONVERTERS, source, what="option")


def _keys_errors(
    prefix: str,
    table: Mapping[str, Any],
    converters: Mapping[str, Callable[[object], Any]],
    source: str,
    *,
    what: str = "key",
    also_known: tuple[str, ...] = (),
) -> list[SettingsError]:
    """Each key of one table checked by its converter: unknown keys (naming the known ones) and bad values."""
    errors: list[SettingsError] = []
    for key, value in table.items():
        if key not in converters:
            known = ", ".join([*converters, *also_known])
            errors.append(SettingsError(f"{prefix}.{key}", value, f"unknown {what} (known: {known})", source))
            continue
        try:
            converters[key](value)
        except ValueError as exc:
            errors.append(SettingsError(f"{prefix}.{key}", value, str(exc), source))
    return errors


def _model_config(table: Mapping[str, Any]) -> ModelConfig:
    values = {key: MODEL_CONVERTERS[key](value) for key, value in table.items() if key != "options"}
    options = {key: OPTION_CONVERTERS[key](value) for key, value in table.get("options", {}).items()}
    return ModelConfig(**values, options=options)


def build(start: Settings, file: Document, api: Document) -> EffectiveConfig:
    """The effective configuration from the layers; raises the first SettingsError of an invalid layer.

    `start` is what the service started with: its `env`-sourced values stay as they are.
    """
    for layer, source in ((file, "file"), (api, "api")):
        errors = document_errors(layer, source)
        if errors:
            raise errors[0]
    env_keys = {key for key, source in start.sources.items() if source == "env"}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer, source in ((file, "file"), (api, "api")):
        for key, value in layer.items():
            if key not in TABLES and key not in env_keys:
                values[key], sources[key] = CONVERTERS[key](value), source
    for key in env_keys:
        values[key], sources[key] = getattr(start, key), "env"
    settings = replace(Settings(), **values, sources=sources)
    if (settings.tls_cert_path is None) != (settings.tls_key_path is None):
        raise SettingsError("tls_cert_path", settings.tls_cert_path, "set both tls_cert_path and tls_key_path")
    tables = merge(file.get("models", {}), api.get("models", {}))
    model_sources = {name: "api" if name in api.get("models", {}) else "file" for name in tables}
    models = {name: _model_config(table) for name, table in tables.items()}
    provider_tables = merge(file.get("providers", {}), api.get("providers", {}))
    provider_sources = {name: "api" if name in api.get("providers", {}) else "file" for name in provider_tables}
    providers = {
        name: ProviderTable(**{key: PROVIDER_CONVERTERS[key](value) for key, value in table.items()})
        for name, table in provider_tables.items()
    }
    return EffectiveConfig(settings, models, sources, model_sources, file, api, providers, provider_sources)


def env_name(key: str) -> str:
    return ENV_NAMES.get(key, (key.upper(),))[0]


# -- views: flattened, redacted, diffed, as TOML -----------------------------------------------------------


def is_secret(key: str) -> bool:
    return key.endswith("_token") or "password" in key or key.endswith("_secret")


def redact(key: str, value: Any) -> Any:
    """Secrets become `***`; a database URL keeps everything but its password."""
    if is_secret(key):
        return REDACTED if value else value
    if key == "database_url" and isinstance(value, str) and value:
        parsed = urlparse(value)
        if parsed.password:
            netloc = f"{parsed.username}:{REDACTED}@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
            return urlunparse(parsed._replace(netloc=netloc))
    return value


def plain(value: Any) -> Any:
    """JSON/TOML-friendly: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    return value


def flat_view(config: EffectiveConfig) -> dict[str, Any]:
    """Every effective value under one dotted key, redacted: what diffs and the API compare."""
    view = {key: redact(key, plain(getattr(config.settings, key))) for key in SETTING_KEYS}
    for name, model in config.models.items():
        prefix = f'models."{name}"'
        for key in MODEL_CONVERTERS:
            view[f"{prefix}.{key}"] = getattr(model, key)
        for key, value in model.options.items():
            view[f"{prefix}.options.{key}"] = value
    for name, provider in config.providers.items():
        for key in PROVIDER_CONVERTERS:
            view[f"providers.{name}.{key}"] = getattr(provider, key)
    return view


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`{key: {"from": old, "to": new}}` for every key whose value changed, appeared or went away."""
    return {
        key: {"from": before.get(key), "to": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def configured_document(config: EffectiveConfig) -> Document:
    """What an operator configured (file and API layers merged), without secrets: the backup's content."""
    document = merge(config.file, config.api)
    return {key: value for key, value in document.items() if not is_secret(key) and key != "database_url"}


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
