"""msgspec Structs for the model and provider REST API (`/api/v1/models`, `/api/v1/providers`).

A model is `app.providers.types.ModelInfo` as it is (camelCase already); these wrap lists of them.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from app.providers.types import ModelInfo, ProviderStatus


class ModelList(msgspec.Struct, rename="camel"):
    models: list[ModelInfo]
    count: int
    #: each provider's health and listing, so a client can tell "no models" from "Ollama is down"
    providers: list[ProviderStatus]


class ProviderList(msgspec.Struct, rename="camel"):
    providers: list[ProviderStatus]
    count: int


class ModelAction(msgspec.Struct, rename="camel"):
    action: Literal["load", "unload"]
    model: ModelInfo
