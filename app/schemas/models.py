"""msgspec Structs for the model and provider REST API (`/api/v1/models`, `/api/v1/providers`, readiness).

The API's own shapes, kept apart from the providers' internal types (`app.providers.types`), so a provider can
change what it carries without changing the wire. Each `of` copies the fields the API shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from app.providers import types as provider_types


class ModelCapabilities(msgspec.Struct, kw_only=True):
    text: bool
    vision: bool
    streaming: bool


class Model(msgspec.Struct, kw_only=True, rename="camel"):
    """One model. `name` carries the provider prefix (`hf/...`, `ollama/...`)."""

    name: str
    provider: str
    native_name: str
    display_name: str
    family: str | None
    parameter_size: str | None
    quantization: str | None
    context_length: int | None
    capabilities: ModelCapabilities
    loaded: bool
    size_bytes: int | None
    metadata: dict[str, object]

    @classmethod
    def of(cls, info: provider_types.ModelInfo) -> Model:
        caps = info.capabilities
        return cls(
            name=info.name,
            provider=info.provider,
            native_name=info.native_name,
            display_name=info.display_name,
            family=info.family,
            parameter_size=info.parameter_size,
            quantization=info.quantization,
            context_length=info.context_length,
            capabilities=ModelCapabilities(text=caps.text, vision=caps.vision, streaming=caps.streaming),
            loaded=info.loaded,
            size_bytes=info.size_bytes,
            metadata=dict(info.metadata),
        )


class Health(msgspec.Struct, kw_only=True, rename="camel"):
    status: Literal["healthy", "degraded", "unhealthy", "unknown"]
    latency_ms: float | None
    detail: str
    checked_at: datetime

    @classmethod
    def of(cls, health: provider_types.ProviderHealth) -> Health:
        return cls(
            status=health.status, latency_ms=health.latency_ms, detail=health.detail, checked_at=health.checked_at
        )


class Circuit(msgspec.Struct, kw_only=True, rename="camel"):
    state: Literal["closed", "open", "half_open"]
    consecutive_failures: int
    retry_in_s: float | None


class Provider(msgspec.Struct, kw_only=True, rename="camel"):
    """One provider: health, circuit breaker, and how its last model listing went."""

    name: str
    prefix: str
    health: Health
    circuit: Circuit
    model_count: int
    listing_error: str | None
    stale: bool

    @classmethod
    def of(cls, status: provider_types.ProviderStatus) -> Provider:
        circuit = status.circuit
        return cls(
            name=status.name,
            prefix=status.prefix,
            health=Health.of(status.health),
            circuit=Circuit(
                state=circuit.state,
                consecutive_failures=circuit.consecutive_failures,
                retry_in_s=circuit.retry_in_s,
            ),
            model_count=status.model_count,
            listing_error=status.listing_error,
            stale=status.stale,
        )


class ModelList(msgspec.Struct, rename="camel"):
    models: list[Model]
    count: int
    #: each provider's health and listing, so a client can tell "no models" from "Ollama is down"
    providers: list[Provider]


class ProviderList(msgspec.Struct, rename="camel"):
    providers: list[Provider]
    count: int


class ModelAction(msgspec.Struct, rename="camel"):
    action: Literal["load", "unload"]
    model: Model


class ModelRemoved(msgspec.Struct, rename="camel"):
    """`POST /api/v1/models/<name>/remove`: the export and its stored configuration are gone."""

    action: Literal["remove"]
    name: str
    #: it was loaded (idle), and was unloaded first
    unloaded: bool


class StoredModelConfig(msgspec.Struct, rename="camel"):
    """A discovered model's stored configuration (`/api/v1/model-configs`)."""

    name: str
    provider: str
    enabled: bool
    context_length: int | None
    capabilities: dict[str, object]
    quantization: str | None
    default_options: dict[str, object]
    context_budget: int | None
    system_prompt: str | None
    keep_alive_s: int | None
    created_at: str
    updated_at: str
    #: when the model last answered a turn (epoch ms; null until it first does)
    last_used_at: str | None = None
