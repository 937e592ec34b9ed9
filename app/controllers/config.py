"""`/api/v1/config`: read, validate, change, back up, restore and follow the running configuration.

Every endpoint here is an admin endpoint (see `app.controllers.admin_guard`), reads included: the
configuration names hosts and prompts, and a fresh install is not configurable from the network by default.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import asdict
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, patch, post
from litestar.response import Stream

from app.config import effective as cm
from app.config.service import ConfigurationService, Revision, error_dict
from app.config.settings import KEYS
from app.config.toml import normalize, parse_toml, plain
from app.controllers.admin_guard import JSON, TOML, admin_only, takes
from app.controllers.sse import SSE_HEADERS, sse_event, with_keepalive
from app.errors import ErrorCode, ServiceError
from app.openapi import ConfigBackupOperation, ConfigDocumentOperation, body, errors, event_stream
from app.schemas.config import (
    ChangeOut,
    ConfigOut,
    ConfigValueOut,
    ModelTableOut,
    ProviderTableOut,
    RevisionOut,
    RevisionsOut,
    ValidationOut,
)
from app.shutdown import ShutdownSignal, until_shutdown


def config_view(service: ConfigurationService) -> ConfigOut:
    config = service.current
    settings = {
        key: ConfigValueOut(
            value=cm.redact(key, plain(getattr(config.settings, key))),
            source=config.sources.get(key, "default"),
            env_name=row.env_name,
            restart_required=row.restart,
        )
        for key, row in KEYS.items()
    }
    models = {
        name: ModelTableOut(
            enabled=table.enabled,
            system_prompt=table.system_prompt,
            context_budget=table.context_budget,
            keep_alive_s=table.keep_alive_s,
            options=table.options,
            source=config.model_sources.get(name, "file"),
        )
        for name, table in config.models.items()
    }
    providers = {
        name: provider_table_out(table, config.provider_sources.get(name, "file"))
        for name, table in config.providers.items()
    }
    path = str(service.path) if service.path is not None else None
    return ConfigOut(
        settings=settings, models=models, providers=providers, config_file=path, last_error=service.last_error
    )


def provider_table_out(table: cm.ProviderTable, source: str) -> ProviderTableOut:
    """A provider table with the keys of its type, its API key redacted (an unset one left out)."""
    values = {key: cm.redact(key, plain(getattr(table, key))) for key in table.keys}
    if not values.get("api_key"):
        values.pop("api_key", None)
    return ProviderTableOut(**values, source=source)


def revision_out(revision: Revision) -> RevisionOut:
    return RevisionOut(**asdict(revision))


async def document_from(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """A JSON object or a TOML text, as its content type says (the guard admits only these two)."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    if request.content_type[0].lower() == JSON:
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise ServiceError(ErrorCode.INVALID_REQUEST, f"The body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ServiceError(ErrorCode.INVALID_REQUEST, "The body must be a JSON object or a TOML text")
        return normalize(data)
    return parse_toml(raw)


class ConfigController(Controller):
    path = "/api/v1/config"
    tags = ("configuration",)
    guards = (admin_only,)

    @get(
        "/",
        summary="The effective configuration, secrets redacted, with the source of each value",
        responses=errors(401, 403),
    )
    async def read(self, config_service: ConfigurationService) -> ConfigOut:
        return config_view(config_service)

    @post(
        "/validate",
        summary="Validate a TOML text (application/toml) or JSON object as a config file; applies nothing",
        status_code=200,
        opt=takes(TOML, JSON),
        operation_class=ConfigDocumentOperation,
        responses=errors(400, 401, 403, 413, 415),
    )
    async def validate(self, request: Request[Any, Any, Any], config_service: ConfigurationService) -> ValidationOut:
        try:
            document = await document_from(request)
        except cm.SettingsError as exc:
            return ValidationOut(valid=False, errors=[error_dict(exc)])
        errors = config_service.validate(document)
        return ValidationOut(valid=not errors, errors=errors)

    @patch(
        "/",
        summary="Change settings (a JSON object); validated, stored as a revision, applied",
        opt=takes(JSON),
        responses=errors(400, 401, 403, 409, 413, 415),
    )
    async def change(self, config_service: ConfigurationService, data: dict[str, Any]) -> ChangeOut:
        service = config_service
        revision = await service.patch(data)
        return ChangeOut(revision=revision_out(revision), config=config_view(service))

    @get("/revisions", summary="History of applied and refused changes, newest first", responses=errors(400, 401, 403))
    async def revisions(self, config_service: ConfigurationService, limit: int = 100) -> RevisionsOut:
        rows = await config_service.revisions(max(1, min(limit, 1000)))
        return RevisionsOut(revisions=[revision_out(row) for row in rows])

    @post(
        "/revisions/{revision_id:int}/restore",
        summary="Go back to the configuration just after an applied revision; restored like a backup of that moment",
        status_code=200,
        responses=errors(400, 401, 403, 404, 415),
    )
    async def restore_revision(self, revision_id: int, config_service: ConfigurationService) -> ChangeOut:
        revision = await config_service.restore_revision(revision_id)
        return ChangeOut(revision=revision_out(revision), config=config_view(config_service))

    @get(
        "/backup",
        summary="The configured values (file and API, no secrets) as a TOML file",
        responses={200: body(str, "The TOML text, as an attachment", "application/toml"), **errors(401, 403)},
    )
    async def backup(self, config_service: ConfigurationService) -> Response[str]:
        return Response(
            config_service.backup(),
            media_type="application/toml",
            headers={"Content-Disposition": 'attachment; filename="beth.toml"'},
        )

    @post(
        "/restore",
        summary="Upload a TOML backup (application/toml); validated before it replaces the config file",
        status_code=200,
        opt=takes(TOML),
        operation_class=ConfigBackupOperation,
        responses=errors(400, 401, 403, 409, 413, 415),
    )
    async def restore(self, request: Request[Any, Any, Any], config_service: ConfigurationService) -> ChangeOut:
        service = config_service
        text = (await request.body()).decode("utf-8", errors="replace")
        revision = await service.restore(text)
        return ChangeOut(revision=revision_out(revision), config=config_view(service))

    @get(
        "/events",
        summary="Server-sent events: `config` with each revision as it is recorded",
        responses={200: event_stream("`config` events, each a revision as JSON"), **errors(401, 403)},
    )
    async def events(self, config_service: ConfigurationService, shutdown: ShutdownSignal) -> Stream:
        service = config_service

        async def frames() -> AsyncGenerator[bytes, None]:
            yield b": connected\n\n"
            async for revision in service.events():
                yield sse_event("config", revision_out(revision))

        # the stream ends when the server shuts down, so it never holds the shutdown open
        stream = until_shutdown(frames(), shutdown)
        return Stream(with_keepalive(stream), media_type="text/event-stream", headers=SSE_HEADERS)
