"""Every model and provider the service discovers gets a stored default configuration.

When the catalog lists a model for the first time (a new export, a model pulled into Ollama), a
`model_metadata` row is generated from what the provider reports (context length, capabilities,
quantization) and the model's settings (enabled, default options, prompt, budget, keep-alive): the
defaults, or what the operator configured for it. Later listings refresh the facts; the settings
columns mirror the published configuration (`sync_settings` after each applied change), so the stored
row and the running configuration never disagree. (Provider configurations are the configuration service's:
`app/config/provider_store.py`.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from app.config.effective import EffectiveConfig
from app.config.model_overrides import ModelOverrides
from app.config.snapshot import ConfigSource
from app.db.tables import ModelRecord
from app.providers.types import ModelInfo
from app.services.usage import UsageRecord

log = logging.getLogger(__name__)


class ModelRecords:
    """The `model_metadata` rows of every model the catalog lists."""

    def __init__(self, config: ConfigSource) -> None:
        self.config = config
        self._stored: set[str] = set()
        self._lock = asyncio.Lock()

    async def record(self, models: Sequence[ModelInfo]) -> list[str]:
        """Store new models, refresh facts of known ones; returns the names that were new.

        Catalog refreshes can overlap: one at a time here, and an insert that another replica made first
        is left as it is (ON CONFLICT DO NOTHING)."""
        async with self._lock:
            return await self._record(models)

    async def _record(self, models: Sequence[ModelInfo]) -> list[str]:
        new: list[str] = []
        now = datetime.now(UTC)
        # a model no longer listed (removed, its provider gone) is looked up again if it comes back
        self._stored &= {model.name for model in models}
        for model in models:
            facts = {
                ModelRecord.provider: model.provider,
                ModelRecord.display_name: model.display_name or model.native_name,
                ModelRecord.family: model.family,
                ModelRecord.parameter_size: model.parameter_size,
                ModelRecord.quantization: model.quantization,
                ModelRecord.context_length: model.context_length,
                ModelRecord.capabilities: msgspec.json.encode(model.capabilities).decode(),
            }
            if model.name in self._stored:
                continue
            exists = await ModelRecord.exists().where(ModelRecord.name == model.name)
            if exists:
                await ModelRecord.update({**facts, ModelRecord.updated_at: now}).where(ModelRecord.name == model.name)
            else:
                settings = _columns(self.config.current.for_model(model.name, model))
                await ModelRecord.insert(
                    ModelRecord(
                        name=model.name,
                        metadata="{}",
                        created_at=now,
                        updated_at=now,
                        **{column._meta.name: value for column, value in {**facts, **settings}.items()},
                    )
                ).on_conflict(target=ModelRecord.name, action="DO NOTHING")
                new.append(model.name)
                log.info("discovered model %s: stored its default configuration", model.name)
            self._stored.add(model.name)
        return new

    async def used(self, record: UsageRecord) -> None:
        """A usage observer: stamp `last_used_at` on the stored row of the model that answered a turn (a
        turn no model could start leaves every row as it was)."""
        if record.answered:
            await ModelRecord.update({ModelRecord.last_used_at: datetime.now(UTC)}).where(
                ModelRecord.name == record.model
            )

    async def sync_settings(self) -> int:
        """Bring every stored model's settings columns in line with the published configuration; returns how many rows
        changed. Rows whose model is not listed right now are matched by their stored names."""
        rows = await ModelRecord.select(ModelRecord.name, ModelRecord.provider, *SETTINGS_COLUMNS).output(
            load_json=True
        )
        changed = 0
        for row in rows:
            name, provider = row["name"], row["provider"]
            native = name.removeprefix(f"{provider}/")
            wanted = _columns(
                self.config.current.for_model(name, ModelInfo(name=name, provider=provider, native_name=native))
            )
            stored = {column: row[column._meta.name] for column in SETTINGS_COLUMNS}
            if _comparable(stored) != _comparable(wanted):
                await ModelRecord.update({**wanted, ModelRecord.updated_at: datetime.now(UTC)}).where(
                    ModelRecord.name == name
                )
                changed += 1
        if changed:
            log.info("stored settings of %d models updated from the configuration", changed)
        return changed

    # -- as a reaction to configuration changes ------------------------------------------------------------

    async def prepare(self, old: EffectiveConfig, new: EffectiveConfig) -> Callable[[], None]:
        return lambda: None

    async def applied(self, old: EffectiveConfig, new: EffectiveConfig) -> None:
        await self.sync_settings()


SETTINGS_COLUMNS = (
    ModelRecord.enabled,
    ModelRecord.default_options,
    ModelRecord.system_prompt,
    ModelRecord.context_budget,
    ModelRecord.keep_alive_s,
)


def _columns(settings: ModelOverrides) -> dict[Any, Any]:
    """A model's settings as `model_metadata` columns (options as the JSON of those that are set)."""
    options = msgspec.to_builtins(settings.options) if settings.options is not None else {}
    keep_alive = settings.keep_alive_s
    return {
        ModelRecord.enabled: settings.enabled,
        ModelRecord.default_options: msgspec.json.encode(options).decode(),
        ModelRecord.system_prompt: settings.system_prompt,
        ModelRecord.context_budget: settings.context_budget,
        ModelRecord.keep_alive_s: round(keep_alive) if keep_alive is not None else None,
    }


def _comparable(columns: dict[Any, Any]) -> dict[str, Any]:
    """Column values with the JSON one decoded, so a stored row and a wanted one compare by content."""
    result = {column._meta.name: value for column, value in columns.items()}
    options = result["default_options"]
    result["default_options"] = msgspec.json.decode(options) if isinstance(options, str | bytes) else options
    return result
