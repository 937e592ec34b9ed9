"""`create_app(settings)`: the Litestar application and the resources its lifespan opens and closes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide

from app.composition import Services, open_services
from app.config.load import load_settings
from app.config.service import ConfigurationService
from app.config.settings import Settings
from app.config.snapshot import ConfigSource
from app.controllers.config import ConfigController
from app.controllers.console import ConsoleController, console_templates
from app.controllers.conversations import ConversationController
from app.controllers.dev_tools import api_docs_config, static_files
from app.controllers.health import HealthController
from app.controllers.images import ImageController
from app.controllers.legacy_stream import StreamController
from app.controllers.model_configs import ModelConfigController
from app.controllers.models import ModelController, ProviderController
from app.controllers.observability import ObservabilityController
from app.controllers.openai_api import OpenAIController
from app.controllers.provider_configs import ProviderConfigController
from app.db.engine import close_database, open_database, ping
from app.db.migrate import migrate
from app.graphql.controller import GraphQLController
from app.http_errors import EXCEPTION_HANDLERS
from app.logging_setup import request_context
from app.openapi import StrictStructSchemaPlugin
from app.providers.registry import ProviderRegistry
from app.services.catalog import ModelCatalog
from app.services.chat import ChatService
from app.services.completions import CompletionService
from app.services.conversations import ConversationService
from app.services.health_monitor import HealthMonitor
from app.services.images import ImageStore
from app.services.metrics import ServiceMetrics
from app.services.password_attempts import remember_client_address
from app.services.streams import StreamSessions
from app.services.usage import UsageStats
from app.shutdown import ShutdownSignal

log = logging.getLogger(__name__)


def _services(state: State) -> Services:
    return state.services


def provide_conversations(state: State) -> ConversationService:
    return _services(state).conversations


def provide_catalog(state: State) -> ModelCatalog:
    return _services(state).catalog


def provide_chat(state: State) -> ChatService:
    return _services(state).chat


def provide_completions(state: State) -> CompletionService:
    return _services(state).completions


def provide_sessions(state: State) -> StreamSessions:
    return _services(state).sessions


def provide_images(state: State) -> ImageStore:
    return _services(state).images


def provide_usage(state: State) -> UsageStats:
    return _services(state).usage


def provide_registry(state: State) -> ProviderRegistry:
    return _services(state).registry


def provide_monitor(state: State) -> HealthMonitor:
    return _services(state).monitor


def provide_metrics(state: State) -> ServiceMetrics:
    return _services(state).metrics


def provide_ping_database(state: State) -> Callable[[], Awaitable[object]]:
    return _services(state).ping_database


def provide_config(state: State) -> ConfigSource:
    return _services(state).config


def provide_config_service(state: State) -> ConfigurationService:
    return _services(state).config_service


def provide_shutdown(state: State) -> ShutdownSignal:
    return _services(state).shutdown


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the app; the database is opened (and migrated) when the app starts, not at import."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = await open_database(settings.effective_database_url)
        try:
            await migrate()
            log.info("database ready: %s", engine.engine_type)
            async with open_services(settings, metrics, lambda: ping(engine)) as services:
                app.state.services = services  # the one thing on the state: read by the providers below
                yield
        finally:
            await close_database(engine)

    metrics = ServiceMetrics()
    # The streaming route takes multipart uploads: up to `image_max_files` images besides the fields.
    stream_routes = Router(
        path="/",
        route_handlers=[StreamController],
        request_max_body_size=settings.image_max_files * settings.image_max_mb * 1024 * 1024 + settings.max_body_bytes,
    )
    # The OpenAI-compatible API takes images inline, as base64 data: URLs (4 characters for 3 bytes).
    openai_routes = Router(
        path="/",
        route_handlers=[OpenAIController],
        request_max_body_size=settings.image_max_files * settings.image_max_mb * 1024 * 1024 * 4 // 3
        + settings.max_body_bytes,
    )
    return Litestar(
        route_handlers=[
            HealthController,
            ConversationController,
            stream_routes,
            openai_routes,
            ImageController,
            ObservabilityController,
            ModelConfigController,
            ConfigController,
            ModelController,
            ProviderController,
            ProviderConfigController,
            GraphQLController,
            ConsoleController,
            static_files(),
        ],
        dependencies={
            "conversations": Provide(provide_conversations, sync_to_thread=False),
            "chat": Provide(provide_chat, sync_to_thread=False),
            "completions": Provide(provide_completions, sync_to_thread=False),
            "catalog": Provide(provide_catalog, sync_to_thread=False),
            "sessions": Provide(provide_sessions, sync_to_thread=False),
            "image_store": Provide(provide_images, sync_to_thread=False),
            "usage": Provide(provide_usage, sync_to_thread=False),
            "registry": Provide(provide_registry, sync_to_thread=False),
            "config": Provide(provide_config, sync_to_thread=False),
            "monitor": Provide(provide_monitor, sync_to_thread=False),
            "metrics": Provide(provide_metrics, sync_to_thread=False),
            "ping_database": Provide(provide_ping_database, sync_to_thread=False),
            "config_service": Provide(provide_config_service, sync_to_thread=False),
            "shutdown": Provide(provide_shutdown, sync_to_thread=False),
        },
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
        openapi_config=api_docs_config(title="beth-chat-service", version="0.1.0", path="/api/v1/schema"),
        template_config=console_templates(),
        plugins=[StrictStructSchemaPlugin()],
        debug=False,
    )
