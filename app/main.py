"""`create_app(settings)`: the Litestar application and the resources its lifespan opens and closes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from strawberry.litestar import make_graphql_controller

from app.controllers.conversations import ConversationController
from app.controllers.health import HealthController
from app.db.engine import close_database, open_database, ping
from app.db.migrate import migrate
from app.graphql.context import provide_graphql_context
from app.graphql.schema import schema
from app.http_errors import EXCEPTION_HANDLERS
from app.services.conversations import ConversationService
from app.settings import Settings, load_settings

log = logging.getLogger(__name__)


def provide_conversations(state: State) -> ConversationService:
    return state.conversations


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; the database is opened (and migrated) when the app starts, not at import."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = await open_database(settings.effective_database_url)
        try:
            await migrate()
            app.state.database_ping = lambda: ping(engine)
            log.info("database ready: %s", engine.engine_type)
            yield
        finally:
            await close_database(engine)

    graphql = make_graphql_controller(
        schema, path="/graphql", context_getter=provide_graphql_context, graphql_ide="graphiql"
    )
    return Litestar(
        route_handlers=[HealthController, ConversationController, graphql],
        dependencies={"conversations": Provide(provide_conversations, sync_to_thread=False)},
        state=State({"settings": settings, "conversations": ConversationService(settings.bcrypt_rounds)}),
        lifespan=[lifespan],
        cors_config=CORSConfig(
            allow_origins=list(settings.cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Content-Type", "Authorization", "X-Requested-With", "X-Conversation-Password"],
        ),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="beth-chat-service", version="0.1.0", path="/api/v1/schema"),
        debug=False,
    )
