"""REST: the model catalog and providers under `/api/v1`.

Model names contain `/` and `:` (`hf/SmolLM2-135M-Instruct`, `ollama/llama3.1:8b`), so they travel as a
`path` parameter. Litestar allows nothing after a path parameter, so load, unload and remove are
`POST /api/v1/models/<name>/load`, `/unload` and `/remove` read from the tail of that one path. They are
admin actions (`admin_only`): they cost memory and seconds of reload for every user, and removing an
export deletes its files (`app/services/model_removal.py`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import Parameter

from app.config.snapshot import ConfigSource
from app.controllers.admin_guard import admin_only
from app.errors import ErrorCode, ServiceError
from app.openapi import errors
from app.providers.registry import ProviderRegistry
from app.schemas.models import Model, ModelAction, ModelList, ModelRemoved, Provider, ProviderList
from app.services.catalog import ModelCatalog
from app.services.model_removal import remove_model

ACTIONS = ("load", "unload", "remove")

CapabilityFilter = Annotated[
    Literal["text", "vision", "streaming"] | None, Parameter(description="Only models with this capability")
]


class ModelController(Controller):
    path = "/api/v1/models"
    tags = ("models",)

    @get(
        "/",
        summary="All models of all providers; search by name, filter by provider, capability, loaded",
        responses=errors(400),
    )
    async def list_models(
        self,
        catalog: ModelCatalog,
        search: Annotated[str | None, Parameter(max_length=200)] = None,
        provider: Annotated[str | None, Parameter(max_length=50)] = None,
        capability: CapabilityFilter = None,
        loaded: bool | None = None,
    ) -> ModelList:
        models = await catalog.models(search=search, provider=provider, capability=capability, loaded=loaded)
        providers = [Provider.of(status) for status in await catalog.providers()]
        return ModelList(models=[Model.of(model) for model in models], count=len(models), providers=providers)

    @get(
        "/{name:path}",
        summary="One model by name (`hf/<alias>`, `ollama/<name>` or a bare Ollama name)",
        responses=errors(400, 404),
    )
    async def get_model(self, name: str, catalog: ModelCatalog) -> Model:
        return Model.of(await catalog.get(name.lstrip("/")))

    @post(
        "/{target:path}",
        status_code=200,
        summary="`<name>/load`, `/unload` or `/remove`: load a model into memory, free it, or delete an hf "
        "export (admin)",
        description="`remove` deletes an exported (hf) model's folder and stored configuration, unloading it "
        "first when it is loaded and idle; while replies are being generated with it, it answers 409 "
        "`MODEL_IN_USE` and changes nothing.",
        guards=[admin_only],
        responses=errors(400, 401, 403, 404, 409, 415, 429, 500, 503, 504, 507),
    )
    async def act(
        self, target: str, catalog: ModelCatalog, registry: ProviderRegistry, config: ConfigSource
    ) -> ModelAction | ModelRemoved:
        name, _, action = target.lstrip("/").rpartition("/")
        if not name or action not in ACTIONS:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                "Endpoint not found: use POST /api/v1/models/<name>/load, /unload or /remove",
                details={"path": target},
            )
        if action == "remove":
            stale_s = config.settings.stream_stale_s
            removed = await remove_model(name, registry=registry, catalog=catalog, stale_s=stale_s)
            return ModelRemoved(action="remove", name=removed.name, unloaded=removed.unloaded)
        model = await (catalog.load(name) if action == "load" else catalog.unload(name))
        return ModelAction(action=action, model=Model.of(model))  # type: ignore[arg-type]


class ProviderController(Controller):
    path = "/api/v1/providers"
    tags = ("models",)

    @get("/", summary="Every provider with its health, circuit breaker and model count")
    async def list_providers(self, catalog: ModelCatalog) -> ProviderList:
        providers = [Provider.of(status) for status in await catalog.providers()]
        return ProviderList(providers=providers, count=len(providers))
