"""`GET /api/v1/model-configs`: the stored configuration of every discovered model (generated on discovery).

Admin only, like `GET /api/v1/config`: the tables hold the operator's prompts and options.
"""

from __future__ import annotations

from litestar import Controller, get

from app.controllers.admin_guard import admin_only
from app.openapi import errors
from app.schemas.models import StoredModelConfig
from app.services import stored_model_configs


class ModelConfigController(Controller):
    path = "/api/v1/model-configs"
    tags = ("models",)
    guards = (admin_only,)

    @get("/", summary="Stored configurations of every discovered model", responses=errors(401, 403))
    async def list_configs(self) -> list[StoredModelConfig]:
        return await stored_model_configs.all_configs()

    @get("/{name:path}", summary="One model's stored configuration", responses=errors(400, 401, 403, 404))
    async def get_config(self, name: str) -> StoredModelConfig:
        return await stored_model_configs.config_of(name.lstrip("/"))
