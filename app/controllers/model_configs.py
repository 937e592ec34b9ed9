"""`GET /api/v1/model-configs`: the stored configuration of every discovered model (generated on discovery).

Admin only, like `GET /api/v1/config`: the tables hold the operator's prompts and options.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, get

from app.controllers.admin_guard import admin_only
from app.db.tables import ModelMetadata
from app.db.text import storable
from app.errors import ErrorCode, ServiceError
from app.openapi import errors
from app.schemas.common import epoch_ms


class ModelConfigOut(msgspec.Struct, rename="camel"):
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

    @classmethod
    def of(cls, row: ModelMetadata) -> ModelConfigOut:
        def as_dict(value: object) -> dict[str, object]:
            decoded = msgspec.json.decode(value) if isinstance(value, str | bytes) else value
            return decoded if isinstance(decoded, dict) else {}

        return cls(
            name=row.name,
            provider=row.provider,
            enabled=row.enabled,
            context_length=row.context_length,
            capabilities=as_dict(row.capabilities),
            quantization=row.quantization,
            default_options=as_dict(row.default_options),
            context_budget=row.context_budget,
            system_prompt=row.system_prompt,
            keep_alive_s=row.keep_alive_s,
            created_at=epoch_ms(row.created_at),
            updated_at=epoch_ms(row.updated_at),
        )


class ModelConfigController(Controller):
    path = "/api/v1/model-configs"
    tags = ("models",)
    guards = (admin_only,)

    @get("/", summary="Stored configurations of every discovered model", responses=errors(401, 403))
    async def list_configs(self) -> list[ModelConfigOut]:
        return [ModelConfigOut.of(row) for row in await ModelMetadata.objects().order_by(ModelMetadata.name)]

    @get("/{name:path}", summary="One model's stored configuration", responses=errors(400, 401, 403, 404))
    async def get_config(self, name: str) -> ModelConfigOut:
        name = name.lstrip("/")
        row = await ModelMetadata.objects().where(ModelMetadata.name == name).first() if storable(name) else None
        if row is None:
            raise ServiceError(ErrorCode.MODEL_NOT_FOUND, f"No stored configuration for {name}")
        return ModelConfigOut.of(row)
