"""The effective configuration as data: layered documents in, a validated, immutable `EffectiveConfig` out.

Pure functions, no I/O, so validation, diffs, redaction and the backup can be tested alone and used both by the hot
reload and by the API. Layers, lowest first: defaults < config file < API changes < environment. The environment
layer is what `load_settings` found at start-up with source `env` (CLI flags included): it always wins, and the
API refuses to override it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlparse, urlunparse

from app.config import convert as c
from app.config.model_overrides import ModelOverrides
from app.config.settings import KEYS, SECRET_KEYS, SETTING_KEYS, Settings, SettingsError
from app.config.toml import TABLES, Document, merge, plain
from app.providers.names import RESERVED_PREFIXES
from app.providers.types import GenerationOptions, ModelInfo

REDACTED = "***"

OPTION_CONVERTERS: dict[str, Callable[[object], Any]] = {
    "temperature": c.to_float(0, 10),
    "top_p": c.to_float(0, 1),
    "top_k": c.to_int(0, 100_000),
    "max_tokens": c.to_int(1, 1_000_000),
    "seed": c.to_int(0, 2**63 - 1),
    "repetition_penalty": c.to_float(0, 10),
    "stop": c.stop_sequences,
}
MODEL_CONVERTERS: dict[str, Callable[[object], Any]] = {
    "enabled": c.strict_bool,
    "system_prompt": c.strict_text,
    "context_budget": c.to_int(64, 10_000_000),
    "keep_alive_s": c.to_float(-1, 86_400 * 365),
}


PROVIDER_TYPES: tuple[str, ...] = ("ollama", "openai")
#: names the service gives its own providers (`ollama`, `hf`, `openai`); a table may not take them
RESERVED_PROVIDER_NAMES: frozenset[str] = frozenset(prefix.rstrip("/") for prefix in RESERVED_PREFIXES)
PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _provider_type(raw: object) -> str:
    if raw not in PROVIDER_TYPES:
        raise ValueError(f"must be one of: {', '.join(PROVIDER_TYPES)}")
    return str(raw)


#: a `[providers.<name>]` table's keys, per type; each checks like the main provider's setting of that type
PROVIDER_CONVERTERS: dict[str, dict[str, Callable[[object], Any]]] = {
    "ollama": {
        "type": _provider_type,
        "host": KEYS["ollama_host"].convert,
        "enabled": c.strict_bool,
        "timeout_s": KEYS["ollama_timeout_s"].convert,
        "num_ctx": KEYS["ollama_num_ctx"].convert,
        "keep_alive_s": KEYS["ollama_keep_alive_s"].convert,
    },
    "openai": {
        "type": _provider_type,
        "base_url": KEYS["openai_base_url"].convert,
        "api_key": KEYS["openai_api_key"].convert,
        "models": c.strict_names,
        "enabled": c.strict_bool,
        "timeout_s": KEYS["openai_timeout_s"].convert,
    },
}
PROVIDER_REQUIRED: dict[str, tuple[str, ...]] = {"ollama": ("host",), "openai": ("base_url",)}
#: what a key a table leaves out defaults to, per type (the main provider's default)
PROVIDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "ollama": {"timeout_s": Settings.ollama_timeout_s},
    "openai": {"timeout_s": Settings.openai_timeout_s},
}


@dataclass(frozen=True)
class ProviderTable:
    """One `[providers.<name>]` table, validated: another Ollama host (`host`, ...) or an OpenAI-compatible
    server (`base_url`, `api_key`, `models`), reached as `<name>/<model>`. `api_key` is as configured: the key,
    or an `env:NAME` reference that the providers package resolves when it builds the provider."""

    type: str
    host: str = ""
    enabled: bool = True
    timeout_s: float = Settings.ollama_timeout_s
    num_ctx: int = Settings.ollama_num_ctx
    keep_alive_s: float = Settings.ollama_keep_alive_s
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    #: the only models listed and served (all the server lists, when empty)
    models: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys of this table's type (what views and diffs show)."""
        return tuple(PROVIDER_CONVERTERS[self.type])


@dataclass(frozen=True)
class ModelTable:
    """One `[models."<name>"]` table, validated."""

    enabled: bool = True
    system_prompt: str | None = None
    context_budget: int | None = None
    keep_alive_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def as_overrides(self) -> ModelOverrides:
        options = GenerationOptions(**self.options) if self.options else None
        return ModelOverrides(
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
    models: Mapping[str, ModelTable]
    sources: Mapping[str, str]
    model_sources: Mapping[str, str]
    file: Document
    api: Document
    providers: Mapping[str, ProviderTable] = field(default_factory=dict)
    provider_sources: Mapping[str, str] = field(default_factory=dict)

    def for_model(self, name: str, info: ModelInfo | None) -> ModelOverrides:
        """The table for the prefixed name, the name as asked, or the provider's own name, in that order."""
        for key in (info.name if info else None, name, info.native_name if info else None):
            if key and key in self.models:
                return self.models[key].as_overrides()
        return ModelOverrides()


# -- validation -----------------------------------------------------------------------------------------


def document_errors(document: Mapping[str, Any], source: str) -> list[SettingsError]:
    """Every problem in one document (not just the first), each naming key, value and reason."""
    errors: list[SettingsError] = []
    for key, value in document.items():
        if key == "models":
            errors += _models_errors(value, source)
        elif key == "providers":
            errors += _providers_errors(value, source)
        elif key not in KEYS:
            errors.append(SettingsError(key, value, "unknown key", source))
        else:
            try:
                KEYS[key].convert(value)
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
        kind = table.get("type")
        if "type" not in table:
            errors.append(SettingsError(f"{prefix}.type", None, "is required", source))
        if kind not in PROVIDER_TYPES:  # which keys a table needs depends on its type: check the names only
            known = {
                key: converter for converters in PROVIDER_CONVERTERS.values() for key, converter in converters.items()
            }
            errors += _keys_errors(
                prefix, {k: v for k, v in table.items() if k not in known or k == "type"}, known, source
            )
            continue
        errors += [
            SettingsError(f"{prefix}.{key}", None, "is required", source)
            for key in PROVIDER_REQUIRED[str(kind)]
            if key not in table
        ]
        errors += _keys_errors(prefix, table, PROVIDER_CONVERTERS[str(kind)], source, what=f"key of an {kind} provider")
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
        shown = redact(key, value)  # an error quotes the value: never a secret's
        if key not in converters:
            known = ", ".join([*converters, *also_known])
            errors.append(SettingsError(f"{prefix}.{key}", shown, f"unknown {what} (known: {known})", source))
            continue
        try:
            converters[key](value)
        except ValueError as exc:
            errors.append(SettingsError(f"{prefix}.{key}", shown, str(exc), source))
    return errors


def _model_table(table: Mapping[str, Any]) -> ModelTable:
    values = {key: MODEL_CONVERTERS[key](value) for key, value in table.items() if key != "options"}
    options = {key: OPTION_CONVERTERS[key](value) for key, value in table.get("options", {}).items()}
    return ModelTable(**values, options=options)


def _provider_table(table: Mapping[str, Any]) -> ProviderTable:
    kind = str(table["type"])
    converters = PROVIDER_CONVERTERS[kind]
    values = {**PROVIDER_DEFAULTS[kind], **{key: converters[key](value) for key, value in table.items()}}
    return ProviderTable(**values)


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
                values[key], sources[key] = KEYS[key].convert(value), source
    for key in env_keys:
        values[key], sources[key] = getattr(start, key), "env"
    settings = replace(Settings(), **values, sources=sources)
    if (settings.tls_cert_path is None) != (settings.tls_key_path is None):
        raise SettingsError("tls_cert_path", settings.tls_cert_path, "set both tls_cert_path and tls_key_path")
    tables = merge(file.get("models", {}), api.get("models", {}))
    model_sources = {name: "api" if name in api.get("models", {}) else "file" for name in tables}
    models = {name: _model_table(table) for name, table in tables.items()}
    # an API provider table replaces the file's table of that name whole: what was PUT is what runs
    provider_tables = {**file.get("providers", {}), **api.get("providers", {})}
    provider_sources = {name: "api" if name in api.get("providers", {}) else "file" for name in provider_tables}
    providers = {name: _provider_table(table) for name, table in provider_tables.items()}
    return EffectiveConfig(settings, models, sources, model_sources, file, api, providers, provider_sources)


def env_name(key: str) -> str:
    return KEYS[key].env_name if key in KEYS else key.upper()


# -- views: flattened, redacted, diffed, as TOML -----------------------------------------------------------


def is_secret(key: str) -> bool:
    """A secret row, or a key named like one (a table's `api_key` or `password`, an unknown `*_token`): shown as
    `***`."""
    return key in SECRET_KEYS or key.endswith(("_token", "_secret", "api_key")) or "password" in key


def redact(key: str, value: Any) -> Any:
    """Secrets become `***` (an API key's `env:NAME` reference is no secret and stays); a database URL keeps
    everything but its password."""
    if is_secret(key):
        if key.endswith("api_key") and c.env_reference(value):
            return value
        return REDACTED if value else value
    if key == "database_url" and isinstance(value, str) and value:
        parsed = urlparse(value)
        if parsed.password:
            netloc = f"{parsed.username}:{REDACTED}@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
            return urlunparse(parsed._replace(netloc=netloc))
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
        for key in provider.keys:
            view[f"providers.{name}.{key}"] = redact(key, plain(getattr(provider, key)))
    return view


def redact_tree(document: Mapping[str, Any]) -> dict[str, Any]:
    """A document with every secret redacted, in its tables too (what the revision history stores)."""
    return {
        key: redact_tree(value) if isinstance(value, Mapping) else redact(key, value) for key, value in document.items()
    }


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`{key: {"from": old, "to": new}}` for every key whose value changed, appeared or went away."""
    return {
        key: {"from": before.get(key), "to": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def configured_document(config: EffectiveConfig) -> Document:
    """What an operator configured (file and API layers merged), without secrets: the backup's content."""
    document = layered(config.file, config.api)
    kept = {key: value for key, value in document.items() if not is_secret(key) and key != "database_url"}
    if "providers" in kept:  # a provider's API key only as an `env:NAME` reference
        kept["providers"] = {
            name: {key: value for key, value in table.items() if redact(key, value) == value}
            for name, table in kept["providers"].items()
        }
    return kept


def layered(file: Document, api: Document) -> Document:
    """The file and API layers as one document, as `build` reads them: API values over the file's, tables merged
    key by key, except that an API provider table replaces the file's table of that name whole."""
    document = merge(file, {key: value for key, value in api.items() if key != "providers"})
    providers = {**file.get("providers", {}), **api.get("providers", {})}
    if providers:
        document["providers"] = providers
    return document
