"""`/console`: the operator console, server-rendered pages behind the admin guard.

Each page is one template fed by `app.console.pages`; the parts that change by the second (uptime, memory,
active streams) arrive through one server-sent event stream, `/console/events`. Actions go through the
REST admin endpoints (config, model load and unload) or the one action of the console's own: stopping a
stream on the operator's word.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from litestar import Controller, get, post
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Stream, Template
from litestar.template.config import TemplateConfig

from app.console import pages
from app.console.sources import ConsoleSources, console_sources
from app.controllers.admin_guard import admin_only
from app.controllers.dev_tools import CSP_HEADERS
from app.controllers.sse import SSE_HEADERS, sse_event, with_keepalive
from app.errors import ErrorCode, ServiceError
from app.services.catalog import ModelCatalog
from app.services.streams import StreamSessions
from app.services.usage import UsageStats

TEMPLATES = Path(__file__).resolve().parent.parent / "console" / "templates"
LIVE_INTERVAL_S = 1.0


def console_templates() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine)


def _page(name: str, context: dict[str, Any]) -> Template:
    return Template(template_name=f"{name}.html", context={"page": name, **context}, headers=CSP_HEADERS)


class ConsoleController(Controller):
    path = "/console"
    guards = (admin_only,)
    include_in_schema = False
    dependencies = {"sources": Provide(console_sources, sync_to_thread=False)}  # noqa: RUF012 - Litestar reads it

    @get("/")
    async def overview(self, sources: ConsoleSources, sessions: StreamSessions) -> Template:
        return _page("overview", await pages.overview(sources, sessions))

    @get("/models")
    async def models(self, sources: ConsoleSources, catalog: ModelCatalog) -> Template:
        return _page("models", await pages.models(catalog, sources))

    @get("/providers")
    async def providers(self, catalog: ModelCatalog) -> Template:
        return _page("providers", {"providers": await catalog.providers()})

    @get("/usage")
    async def usage(self, usage: UsageStats, period: Literal["hour", "day"] = "hour") -> Template:
        return _page("usage", await pages.usage(usage, period))

    @get("/config")
    async def config(self, sources: ConsoleSources) -> Template:
        return _page("config", await pages.configuration(sources))

    @get("/streams")
    async def streams(self, sources: ConsoleSources, sessions: StreamSessions) -> Template:
        return _page("streams", {"live": pages.live_snapshot(sources, sessions)})

    @get("/events")
    async def events(self, sources: ConsoleSources, sessions: StreamSessions) -> Stream:
        """`live` events: uptime, memory and the active streams, about once a second, until the service stops."""

        async def frames() -> AsyncIterator[bytes]:
            while not sessions.stopping:  # at shutdown the feed ends, so the server need not wait for it
                yield sse_event("live", pages.live_snapshot(sources, sessions))
                await asyncio.sleep(LIVE_INTERVAL_S)

        return Stream(with_keepalive(frames()), media_type="text/event-stream", headers=SSE_HEADERS)

    @post("/streams/{session_id:str}/stop", status_code=200)
    async def stop_stream(self, session_id: str, sessions: StreamSessions) -> dict[str, Any]:
        """Stop a stream of this process on the operator's word; its partial reply is saved as on a user's stop."""
        live = sessions.live.get(session_id)
        if live is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No active stream with this id", details={"sessionId": session_id})
        result = await sessions.terminate(session_id, live.conversation_id, "USER_REQUESTED")
        return {"sessionId": result.session_id, "tokenCount": result.token_count, "finalStatus": result.final_status}
