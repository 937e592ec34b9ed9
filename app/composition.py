"""The composition root: every service, built once, in dependency order, in one function.

`open_services(settings)` is where a reader learns the whole app: the published configuration first, then the
providers and the catalog, the conversations, stream sessions and images, the chat turn, and the configuration
service with its reactions. Each gets what it needs through its constructor. The background loops run under one
`BackgroundTasks`, and one shutdown path stops and awaits them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from app.config.load import config_file
from app.config.service import ConfigurationService
from app.config.settings import Settings
from app.config.snapshot import ConfigSource
from app.providers.assembly import ProviderReconciler, build_registry
from app.providers.registry import ProviderRegistry
from app.services.catalog import ModelCatalog
from app.services.chat import ChatService
from app.services.completions import CompletionService
from app.services.conversations import ConversationService, default_conversation_model
from app.services.health_monitor import HealthMonitor
from app.services.images import ImageStore
from app.services.memory_guard import MemoryGuard
from app.services.metrics import ServiceMetrics, state_gauges
from app.services.model_records import ModelRecords
from app.services.password_attempts import PasswordAttempts, password_attempt_limits
from app.services.streams import StreamSessions
from app.services.usage import UsageStats
from app.shutdown import ShutdownSignal
from inference.pool import ModelPool

log = logging.getLogger(__name__)


class BackgroundTasks:
    """The service's long-running loops: started by name, and on shutdown cancelled and awaited together."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, name: str, loop: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._tasks.append(asyncio.create_task(loop(), name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


@dataclass(frozen=True)
class Services:
    """Everything the handlers use, typed; provided to controllers and GraphQL through dependency injection."""

    settings: Settings
    config: ConfigSource
    config_service: ConfigurationService
    metrics: ServiceMetrics
    usage: UsageStats
    conversations: ConversationService
    registry: ProviderRegistry
    monitor: HealthMonitor
    catalog: ModelCatalog
    records: ModelRecords
    sessions: StreamSessions
    images: ImageStore
    chat: ChatService
    completions: CompletionService
    memory_guard: MemoryGuard
    #: checks that the database answers (readiness)
    ping_database: Callable[[], Awaitable[object]]
    #: set when the server begins to shut down, so responses that only wait for news end
    shutdown: ShutdownSignal


def build_conversations(settings: Settings, config: ConfigSource) -> ConversationService:
    attempts = PasswordAttempts(**password_attempt_limits(settings), config=config)
    default_model = default_conversation_model(settings.ollama_enabled, settings.hf_default_model)
    return ConversationService(settings.bcrypt_rounds, default_model, attempts, config=config)


@asynccontextmanager
async def open_services(
    settings: Settings, metrics: ServiceMetrics, ping_database: Callable[[], Awaitable[object]]
) -> AsyncIterator[Services]:
    """Build and start every service (the database is already open); stop them all on the way out."""
    config = ConfigSource.of(settings)
    usage = UsageStats()
    conversations = build_conversations(settings, config)
    registry = build_registry(settings, config)
    monitor = HealthMonitor(
        registry, interval_s=settings.health_check_interval_s, timeout_s=settings.catalog_provider_timeout_s
    )
    catalog = ModelCatalog(
        registry,
        monitor,
        ttl_s=settings.catalog_ttl_s,
        provider_timeout_s=settings.catalog_provider_timeout_s,
        stale_s=settings.catalog_stale_s,
        config=config,
    )
    records = ModelRecords(config)
    catalog.on_refreshed.append(records.record)
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
    chat = ChatService(config, conversations, sessions, images, registry)
    generation_observers = [
        usage.record,
        metrics.observe_generation,
        records.used,
    ]  # every generation, whichever API ran it
    chat.outcomes.observers += generation_observers
    completions = CompletionService(config, registry, images, generation_observers)

    def hf_pool() -> ModelPool | None:  # looked up each time: a config change may replace the hf provider
        return getattr(registry.get("hf"), "pool", None)

    guard = MemoryGuard(
        hf_pool,
        min_available_bytes=settings.memory_min_available_mb * 2**20,
        interval_s=settings.memory_check_interval_s,
    )
    providers = ProviderReconciler(registry, on_swapped=catalog.invalidate)
    config_service = ConfigurationService(settings, config_file(), config, reactions=(providers, records))
    services = Services(
        settings=settings,
        config=config,
        config_service=config_service,
        metrics=metrics,
        usage=usage,
        conversations=conversations,
        registry=registry,
        monitor=monitor,
        catalog=catalog,
        records=records,
        sessions=sessions,
        images=images,
        chat=chat,
        completions=completions,
        memory_guard=guard,
        ping_database=ping_database,
        shutdown=ShutdownSignal(),
    )

    background = BackgroundTasks()
    await registry.initialize()
    try:
        background.start("provider-health-monitor", monitor.run)
        metrics.watch(lambda: state_gauges(sessions, monitor, registry, guard))
        pool = hf_pool()
        if pool is not None:
            pool.listeners.append(metrics.observe_pool)
        await sessions.recover_stale()
        background.start("stream-session-watcher", sessions.watch)
        background.start("image-expiry", images.run_expiry)
        background.start("memory-guard", guard.run)
        await config_service.start()
        background.start("config-watch", config_service.watch)
        background.start("usage-retry", usage.run)
        yield services
    finally:
        await chat.shutdown()  # every generation saves its partial reply first
        await background.stop()
        await providers.stop()
        await usage.close()  # after its retry loop stopped: a last try for what was refused, else logged
        await catalog.close()
        await registry.shutdown()
