"""The API layer's provider tables in `provider_configs`, one row per provider name, so they survive a restart.

The configuration service writes what an applied change changed in them (so that replicas sharing the database
only ever touch the tables they changed), drops them all with the rest of the API layer (a restore, or a start
whose stored API values no longer validate), and reads them back at start-up. A row keeps its table as it was
given, in `settings` (secrets included: they are what reaches the provider, as the config file holds them), with
the table's type and `enabled` also in the `kind` and `enabled` columns for an operator reading the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from app.config.effective import EffectiveConfig
from app.config.toml import Document
from app.db.tables import ProviderConfig


async def stored_provider_tables() -> Document:
    """Every stored provider table, by provider name."""
    rows = await ProviderConfig.select(ProviderConfig.name, ProviderConfig.settings).output(load_json=True)
    return {row["name"]: dict(row["settings"]) for row in rows if isinstance(row["settings"], Mapping)}


async def store_provider_changes(before: Mapping[str, Any], after: EffectiveConfig) -> None:
    """Write what changed from the provider tables `before` to those of `after`'s API layer: tables that are new
    or changed, and the removal of those that went."""
    wanted: Mapping[str, Mapping[str, Any]] = after.api.get("providers", {})
    gone = [name for name in before if name not in wanted]
    if gone:
        await ProviderConfig.delete().where(ProviderConfig.name.is_in(gone))
    now = datetime.now(UTC)
    for name, table in wanted.items():
        if before.get(name) == table:
            continue
        provider = after.providers[name]  # the API table replaces the file's: this is the one that runs
        row = ProviderConfig(
            name=name,
            kind=provider.type,
            display_name=name,
            enabled=provider.enabled,
            settings=msgspec.json.encode(dict(table)).decode(),
            created_at=now,
            updated_at=now,
        )
        changed = (ProviderConfig.kind, ProviderConfig.enabled, ProviderConfig.settings, ProviderConfig.updated_at)
        await ProviderConfig.insert(row).on_conflict(target=ProviderConfig.name, action="DO UPDATE", values=changed)


async def drop_provider_tables() -> None:
    """Remove every stored provider table: the API layer is dropped."""
    await ProviderConfig.delete(force=True)
