"""REST: the model catalog and providers under `/api/v1`.

Model names contain `/` and `:` (`hf/SmolLM2-135M-Instruct`, `ollama/llama3.1:8b`), so they travel as a
`path` parameter. Litestar allows nothing after a path parameter, so load and unload are
`POST /api/v1/models/<name>/load` and `/unload` read from the tail of that one path. Loading and
unloading are admin actions (`admin_only`): they cost memory and seconds of reload for every user.
"""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import Parameter

from app.controllers.admin_guard import admin_only
from app.errors import ErrorCode, ServiceError
from app.openapi import errors
from app.schemas.models import Model, ModelAction, ModelList, Provider, ProviderList
from app.services.catalog import ModelCatalog

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
        summary="`<name>/load` or `<name>/unload`: load a model into memory, or free it (admin)",
        guards=[admin_only],
        responses=errors(400, 401, 403, 404, 409, 415, 429, 500, 503, 504, 507),
    )
    async def act(self, target: str, catalog: ModelCatalog) -> ModelAction:
        name, _, action = target.lstrip("/").rpartition("/")
        if not name or action not in ("load", "unload"):
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                "Endpoint not found: use POST /api/v1/models/<name>/load or /unload",
                details={"path": target},
            )
        model = await (catalog.load(name) if action == "load" else catalog.unload(name))
        return ModelAction(action=action, model=Model.of(model))  # type: ignore[arg-type]


class ProviderController(Controller):
    path = "/api/v1/providers"
    tags = ("models",)

    @get("/", summary="Every provider with its health, circuit breaker and model count")
    async def list_providers(self, catalog: ModelCatalog) -> ProviderList:
        providers = [Provider.of(status) for status in await catalog.providers()]
        return ProviderList(providers=providers, count=len(providers))
