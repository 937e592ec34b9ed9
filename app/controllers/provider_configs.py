"""`/api/v1/providers/<name>/config`: read, create or replace, and remove provider tables through the API.

A provider table set here is an API change of the configuration like a PATCH: validated as a `[providers.<name>]`
table of the config file, recorded as a revision, applied at once (the provider is built, its models listed), and
stored in `provider_configs` so that it survives a restart. Admin endpoints, reads included (see
`app.controllers.admin_guard`): a table names hosts and holds keys.
"""

from __future__ import annotations

from litestar import Controller, delete, get, put

from app.config.effective import EffectiveConfig
from app.config.service import ConfigurationService
from app.controllers.admin_guard import JSON, admin_only, takes
from app.controllers.config import provider_table_out, revision_out
from app.errors import ErrorCode, ServiceError
from app.openapi import errors
from app.schemas.config import ProviderTableOut
from app.schemas.provider_configs import ProviderConfigChangeOut, ProviderConfigIn, ProviderConfigsOut


def provider_view(config: EffectiveConfig, name: str) -> ProviderTableOut | None:
    """Provider `name`'s table as it runs, its key shown as `***`; None when no table has that name."""
    table = config.providers.get(name)
    if table is None:
        return None
    return provider_table_out(table, config.provider_sources.get(name, "file"))


class ProviderConfigController(Controller):
    path = "/api/v1/providers"
    tags = ("configuration",)
    guards = (admin_only,)

    @get("/configs", summary="Every provider table (config file and API), secrets redacted", responses=errors(401, 403))
    async def list_configs(self, config_service: ConfigurationService) -> ProviderConfigsOut:
        config = config_service.current
        providers = {
            name: provider_table_out(table, config.provider_sources.get(name, "file"))
            for name, table in config.providers.items()
        }
        return ProviderConfigsOut(providers=providers, count=len(providers))

    @get("/{name:str}/config", summary="One provider's table, secrets redacted", responses=errors(400, 401, 403, 404))
    async def read(self, name: str, config_service: ConfigurationService) -> ProviderTableOut:
        view = provider_view(config_service.current, name)
        if view is None:
            raise ServiceError(
                ErrorCode.NOT_FOUND,
                f"No provider table named {name} (the main Ollama is set with the ollama_* keys: GET /api/v1/config)",
                details={"provider": name},
            )
        return view

    @put(
        "/{name:str}/config",
        summary="Create or replace a provider's API table; validated like the config file, stored, applied",
        opt=takes(JSON),
        responses=errors(400, 401, 403, 413, 415),
    )
    async def replace(
        self, name: str, data: ProviderConfigIn, config_service: ConfigurationService
    ) -> ProviderConfigChangeOut:
        revision = await config_service.replace_provider(name, data.table())
        return ProviderConfigChangeOut(revision_out(revision), provider_view(config_service.current, name))

    @delete(
        "/{name:str}/config",
        summary="Remove a provider's API table; the config file's table of that name, if any, applies again",
        status_code=200,
        responses=errors(400, 401, 403, 404, 409),
    )
    async def remove(self, name: str, config_service: ConfigurationService) -> ProviderConfigChangeOut:
        revision = await config_service.remove_provider(name)
        return ProviderConfigChangeOut(revision_out(revision), provider_view(config_service.current, name))
