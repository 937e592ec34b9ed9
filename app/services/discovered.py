"""Every model and provider the service discovers gets a stored default configuration.

When the catalog lists a model for the first time (a new export, a model pulled into Ollama), a
`model_metadata` row is generated from what the provider reports (context length, capabilities,
quantization) with default settings (enabled, no overrides); later listings refresh those facts but
never overwrite what an operator set (enabled, options, prompt, budget, keep-alive). Providers get a
`provider_configs` row the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from app.db.tables import ModelMetadata, ProviderConfig
from app.providers.types import ModelInfo

log = logging.getLogger(__name__)


class DiscoveredModels:
    def __init__(self) -> None:
        self._stored: set[str] = set()
        self._providers: set[str] = set()

    async def record(self, models: Sequence[ModelInfo]) -> list[str]:
        """Store new models and providers, refresh facts of known ones; returns the names that were new."""
        new: list[str] = []
        now = datetime.now(UTC)
        for model in models:
            if model.provider not in self._providers:
                await self._provider(model.provider, now)
            facts = {
                ModelMetadata.provider: model.provider,
                ModelMetadata.display_name: model.display_name or model.native_name,
                ModelMetadata.family: model.family,
                ModelMetadata.parameter_size: model.parameter_size,
                ModelMetadata.quantization: model.quantization,
                ModelMetadata.context_length: model.context_length,
                ModelMetadata.capabilities: msgspec.json.encode(model.capabilities).decode(),
            }
            if model.name in self._stored:
                continue
            exists = await ModelMetadata.exists().where(ModelMetadata.name == model.name)
            if exists:
                await ModelMetadata.update({**facts, ModelMetadata.updated_at: now}).where(
                    ModelMetadata.name == model.name
                )
            else:
                await ModelMetadata.insert(
                    ModelMetadata(
                        name=model.name,
                        enabled=True,
                        default_options="{}",
                        metadata="{}",
                        created_at=now,
                        updated_at=now,
                        **{column._meta.name: value for column, value in facts.items()},
                    )
                )
                new.append(model.name)
                log.info("discovered model %s: stored its default configuration", model.name)
            self._stored.add(model.name)
        return new

    async def _provider(self, name: str, now: datetime) -> None:
        if not await ProviderConfig.exists().where(ProviderConfig.name == name):
            await ProviderConfig.insert(
                ProviderConfig(
                    name=name, kind=name, display_name=name, enabled=True, settings="{}", created_at=now, updated_at=now
                )
            )
        self._providers.add(name)
