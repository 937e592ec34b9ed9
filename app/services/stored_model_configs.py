"""Reading the stored configurations of discovered models (`model_metadata`) for the admin API."""

from __future__ import annotations

import msgspec

from app.db.tables import ModelRecord
from app.db.text import equals_text
from app.errors import ErrorCode, ServiceError
from app.schemas.common import epoch_ms
from app.schemas.models import StoredModelConfig


async def all_configs() -> list[StoredModelConfig]:
    """Every stored configuration, by model name."""
    return [_view(row) for row in await ModelRecord.objects().order_by(ModelRecord.name)]


async def config_of(name: str) -> StoredModelConfig:
    """One model's stored configuration; MODEL_NOT_FOUND when none is stored under that name."""
    row = await ModelRecord.objects().where(equals_text(ModelRecord.name, name)).first()
    if row is None:
        raise ServiceError(ErrorCode.MODEL_NOT_FOUND, f"No stored configuration for {name}")
    return _view(row)


def _as_dict(value: object) -> dict[str, object]:
    decoded = msgspec.json.decode(value) if isinstance(value, str | bytes) else value
    return decoded if isinstance(decoded, dict) else {}


def _view(row: ModelRecord) -> StoredModelConfig:
    return StoredModelConfig(
        name=row.name,
        provider=row.provider,
        enabled=row.enabled,
        context_length=row.context_length,
        capabilities=_as_dict(row.capabilities),
        quantization=row.quantization,
        default_options=_as_dict(row.default_options),
        context_budget=row.context_budget,
        system_prompt=row.system_prompt,
        keep_alive_s=row.keep_alive_s,
        created_at=epoch_ms(row.created_at),
        updated_at=epoch_ms(row.updated_at),
        last_used_at=epoch_ms(row.last_used_at) if row.last_used_at else None,
    )
