"""Wire shapes of the configuration endpoints (`/api/v1/config...`), camelCase like every REST answer."""

from __future__ import annotations

from typing import Any

import msgspec


class ConfigValueOut(msgspec.Struct, rename="camel"):
    """One effective setting: its (redacted) value and where it came from: default, file, env or api."""

    value: Any
    source: str
    env_name: str
    restart_required: bool


class ModelTableOut(msgspec.Struct, rename="camel"):
    enabled: bool
    system_prompt: str | None
    context_budget: int | None
    keep_alive_s: float | None
    options: dict[str, Any]
    source: str


class ProviderTableOut(msgspec.Struct, rename="camel", omit_defaults=True):
    """One `[providers.<name>]` table, whose models are named `<name>/<model>`, with the keys of its type: an
    Ollama host (`host`, `numCtx`, `keepAliveS`) or an OpenAI-compatible server (`baseUrl`, `apiKey`, shown as
    `***` unless it is an `env:NAME` reference, and `models`)."""

    type: str
    enabled: bool
    timeout_s: float
    source: str
    host: str | None = None
    num_ctx: int | None = None
    keep_alive_s: float | None = None
    base_url: str | None = None
    api_key: str | None = None
    models: list[str] | None = None


class ConfigOut(msgspec.Struct, rename="camel"):
    settings: dict[str, ConfigValueOut]
    models: dict[str, ModelTableOut]
    providers: dict[str, ProviderTableOut]
    config_file: str | None
    # the last refused change (file, api or restore) since the last applied one
    last_error: dict[str, Any] | None


class ValidationOut(msgspec.Struct, rename="camel"):
    valid: bool
    errors: list[dict[str, Any]]


class RevisionOut(msgspec.Struct, rename="camel"):
    id: int | None
    created_at: str | None
    source: str
    diff: dict[str, Any]
    valid: bool
    error: str | None
    applied: bool


class RevisionsOut(msgspec.Struct, rename="camel"):
    revisions: list[RevisionOut]


class ChangeOut(msgspec.Struct, rename="camel"):
    """The answer to PATCH and restore: the stored revision and the configuration now in effect."""

    revision: RevisionOut
    config: ConfigOut
