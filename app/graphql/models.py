"""GraphQL types and resolvers for the model catalog: `availableModels`, `models(...)` and `providers`.

`availableModels.models` stays a list of strings for the old web client (Ollama names as before,
`hf/<alias>` added); the richer `models` and `providers` queries are new.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

import strawberry

from app.graphql.types import AvailableModelsResponse, ContextInfo
from app.providers import types as provider_types

if TYPE_CHECKING:
    from app.services.catalog import ModelCatalog


@strawberry.enum
class ModelCapability(Enum):
    TEXT = "text"
    VISION = "vision"
    STREAMING = "streaming"


@strawberry.type
class ModelCapabilities:
    text: bool
    vision: bool
    streaming: bool


@strawberry.type
class ModelDescription:
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
    size_bytes: float | None  # GraphQL Int is 32-bit; model files are larger

    @classmethod
    def of(cls, model: provider_types.ModelInfo) -> ModelDescription:
        caps = model.capabilities
        return cls(
            name=model.name,
            provider=model.provider,
            native_name=model.native_name,
            display_name=model.display_name or model.native_name,
            family=model.family,
            parameter_size=model.parameter_size,
            quantization=model.quantization,
            context_length=model.context_length,
            capabilities=ModelCapabilities(text=caps.text, vision=caps.vision, streaming=caps.streaming),
            loaded=model.loaded,
            size_bytes=float(model.size_bytes) if model.size_bytes is not None else None,
        )


@strawberry.type
class ProviderDescription:
    name: str
    prefix: str
    status: str
    detail: str
    latency_ms: float | None
    checked_at: str
    circuit: str
    model_count: int
    listing_error: str | None
    stale: bool

    @classmethod
    def of(cls, status: provider_types.ProviderStatus) -> ProviderDescription:
        return cls(
            name=status.name,
            prefix=status.prefix,
            status=status.health.status,
            detail=status.health.detail,
            latency_ms=status.health.latency_ms,
            checked_at=status.health.checked_at.isoformat(),
            circuit=status.circuit.state,
            model_count=status.model_count,
            listing_error=status.listing_error,
            stale=status.stale,
        )


def _catalog(info: ContextInfo) -> ModelCatalog:
    return info.context.catalog


async def resolve_available_models(info: ContextInfo) -> AvailableModelsResponse:
    names = await _catalog(info).available_model_names()
    return AvailableModelsResponse(models=names, count=len(names))


async def resolve_models(
    info: ContextInfo,
    search: str | None = None,
    provider: str | None = None,
    capability: ModelCapability | None = None,
) -> list[ModelDescription]:
    models = await _catalog(info).models(
        search=search, provider=provider, capability=capability.value if capability else None
    )
    return [ModelDescription.of(model) for model in models]


async def resolve_providers(info: ContextInfo) -> list[ProviderDescription]:
    return [ProviderDescription.of(status) for status in await _catalog(info).providers()]
