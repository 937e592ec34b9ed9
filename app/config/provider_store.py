"""The API layer's provider tables in `provider_configs`, one row per provider name, so they survive a restart.

The configuration service writes the rows after every applied change, so they always mirror the provider tables
of the running API layer, and reads them back at start-up. A row keeps its table as it was given, in `settings`
(secrets included: they are what reaches the provider, as the config file holds them), with the table's type and
`enabled` also in the `kind` and `enabled` columns for an operator reading the database.
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


async def store_provider_tables(config: EffectiveConfig) -> None:
    """Make the rows the provider tables of `config`'s API layer: new and changed ones written, others deleted."""
    wanted: Mapping[str, Mapping[str, Any]] = config.api.get("providers", {})
    stored = await stored_provider_tables()
    gone = [name for name in stored if name not in wanted]
    if gone:
        await ProviderConfig.delete().where(ProviderConfig.name.is_in(gone))
    now = datetime.now(UTC)
    for name, table in wanted.items():
        if stored.get(name) == table:
            continue
        provider = config.providers[name]  # the API table replaces the file's: this is the one that runs
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
