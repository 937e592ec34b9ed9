"""`create_app(settings)`: the Litestar application and the resources its lifespan opens and closes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from app.controllers.config import ConfigController
from app.controllers.conversations import ConversationController
from app.controllers.health import HealthController
from app.controllers.images import ImageController
from app.controllers.legacy_stream import StreamController
from app.controllers.model_configs import ModelConfigController
from app.controllers.models import ModelController, ProviderController
from app.controllers.observability import ObservabilityController
from app.db.engine import close_database, open_database, ping
from app.db.migrate import migrate
from app.graphql.controller import GraphQLController
from app.http_errors import EXCEPTION_HANDLERS
from app.logging_setup import request_context
from app.openapi import StrictStructSchemaPlugin
from app.services.catalog import ModelCatalog
from app.services.chat import ChatService
from app.services.config import configuration
from app.services.conversations import ConversationService, default_conversation_model
from app.services.images import ImageStore
from app.services.memory_guard import MemoryGuard
from app.services.metrics import ServiceMetrics, state_gauges
from app.services.model_services import model_services
from app.services.password_attempts import PasswordAttempts, password_attempt_limits, remember_client_address
from app.services.streams import StreamSessions
from app.services.usage import UsageStats
from app.settings import Settings, load_settings
from inference.pool import ModelPool

log = logging.getLogger(__name__)


def provide_conversations(state: State) -> ConversationService:
    return state.conversations


def provide_catalog(state: State) -> ModelCatalog:
    return state.catalog


def provide_chat(state: State) -> ChatService:
    return state.chat


def provide_sessions(state: State) -> StreamSessions:
    return state.sessions


def provide_images(state: State) -> ImageStore:
    return state.images


def provide_usage(state: State) -> UsageStats:
    return state.usage


@asynccontextmanager
async def chat_turns(app: Litestar, settings: Settings) -> AsyncIterator[None]:
    """Stream sessions, image storage and the chat turn, with their background work.

    Runs after the providers are set up (it needs `app.state.registry` and `app.state.catalog`).
    """
    conversations: ConversationService = app.state.conversations
    sessions = StreamSessions(
        timeout_s=settings.stream_timeout_s,
        flush_interval_s=settings.stream_flush_interval_s,
        stale_s=settings.stream_stale_s,
    )
    images = ImageStore(
        settings.images_dir,
        conversations,
        max_bytes=settings.image_max_mb * 1024 * 1024,
        max_files=settings.image_max_files,
        retention_days=settings.image_retention_days,
    )
    chat = ChatService(
        settings,
        conversations,
        sessions,
        images,
        getattr(app.state, "registry", None),
        getattr(app.state, "catalog", None),
    )
    app.state.sessions, app.state.images, app.state.chat = sessions, images, chat
    metrics: ServiceMetrics = app.state.metrics
    chat.observers += [app.state.usage.record, metrics.observe_generation]
    metrics.watch(lambda: state_gauges(app.state))
    await sessions.recover_stale()
    sessions.start_watcher()
    expiry = asyncio.create_task(images.run_expiry(), name="image-expiry")
    registry = getattr(app.state, "registry", None)

    def hf_pool() -> ModelPool | None:  # looked up each time: a config change may replace the hf provider
        return getattr(registry.get("hf"), "pool", None) if registry is not None else None

    pool = hf_pool()
    if pool is not None:
        pool.listeners.append(metrics.observe_pool)
    guard = MemoryGuard(
        hf_pool,
        min_available_bytes=settings.memory_min_available_mb * 2**20,
        interval_s=settings.memory_check_interval_s,
    )
    app.state.memory_guard = guard
    watching = asyncio.create_task(guard.run(), name="memory-guard")
    try:
        yield
    finally:
        expiry.cancel()
        watching.cancel()
        await chat.shutdown()
        await app.state.usage.close()  # usage the database refused so far: a last try, else logged


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
            async with model_services(app, settings), chat_turns(app, settings), configuration(app, settings):
                yield
        finally:
            await close_database(engine)

    metrics = ServiceMetrics()
    # The streaming route takes multipart uploads: up to `image_max_files` images besides the fields.
    stream_routes = type(
        "StreamRoutes",
        (StreamController,),
        {
            "request_max_body_size": settings.image_max_files * settings.image_max_mb * 1024 * 1024
            + settings.max_body_bytes
        },
    )
    return Litestar(
        route_handlers=[
            HealthController,
            ConversationController,
            stream_routes,
            ImageController,
            ObservabilityController,
            ModelConfigController,
            ConfigController,
            ModelController,
            ProviderController,
            GraphQLController,
        ],
        dependencies={
            "conversations": Provide(provide_conversations, sync_to_thread=False),
            "chat": Provide(provide_chat, sync_to_thread=False),
            "catalog": Provide(provide_catalog, sync_to_thread=False),
            "sessions": Provide(provide_sessions, sync_to_thread=False),
            "images": Provide(provide_images, sync_to_thread=False),
            "usage": Provide(provide_usage, sync_to_thread=False),
        },
        state=State(
            {
                "settings": settings,
                "conversations": ConversationService(
                    settings.bcrypt_rounds,
                    default_conversation_model(settings.ollama_enabled, settings.hf_default_model),
                    PasswordAttempts(**password_attempt_limits(settings)),
                ),
                "usage": UsageStats(),
                "metrics": metrics,
            }
        ),
        middleware=[request_context, remember_client_address, metrics.middleware],
        logging_config=None,
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
        plugins=[StrictStructSchemaPlugin()],
        debug=False,
    )
