"""The model side of the service, assembled from settings: providers, registry, health monitor, catalog.

`model_services(app, settings)` opens them for the app's lifespan and puts them on `app.state`
(`registry`, `catalog`, `health_monitor`, `discovered`). Provider order is the catalog's order: Ollama first, as the old
service listed only Ollama's models, then the embedded `hf` models.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from app.providers.hf import HFProvider
from app.providers.ollama import OllamaProvider
from app.providers.registry import ProviderRegistry
from app.services.catalog import ModelCatalog
from app.services.discovered import DiscoveredModels
from app.services.health_monitor import HealthMonitor
from app.settings import Settings
from inference.pool_settings import PoolSettings


def build_registry(settings: Settings) -> ProviderRegistry:
    registry = ProviderRegistry(
        fallback_models=settings.fallback_models,
        failure_threshold=settings.circuit_failure_threshold,
        cooldown_s=settings.circuit_cooldown_s,
        bare_provider=OllamaProvider.name,
        retries=settings.provider_retries,
        retry_backoff_s=settings.provider_retry_backoff_s,
    )
    if settings.ollama_enabled:
        registry.register(
            OllamaProvider(
                settings.ollama_host,
                timeout_s=settings.ollama_timeout_s,
                num_ctx=settings.ollama_num_ctx,
                keep_alive_s=settings.ollama_keep_alive_s,
            )
        )
    registry.register(build_hf_provider(settings))
    return registry


def build_hf_provider(settings: Settings) -> HFProvider:
    """The `hf` provider for `settings`' models directory (at start-up, and when a change re-points it)."""
    return HFProvider(settings.models_dir, hf_pool_settings(settings), default_max_tokens=settings.chat_max_tokens)


def hf_pool_settings(settings: Settings) -> PoolSettings:
    """The `hf` provider's pool settings (one value for start-up and for the hot reload)."""
    return PoolSettings(
        execution_provider=settings.hf_execution_provider,  # type: ignore[arg-type]
        num_threads=settings.hf_num_threads,
        lookahead_tokens=settings.hf_lookahead_tokens,
        memory_budget_bytes=settings.hf_memory_budget_mb * 2**20 or None,
        max_loaded_models=settings.hf_max_loaded_models,
        keep_alive_s=settings.hf_keep_alive_s,
        preload=settings.hf_preload,
        max_batch_size=settings.hf_max_batch_size,
        queue_length=settings.hf_queue_length,
        queue_wait_s=settings.hf_queue_wait_s,
        prefix_cache_bytes=settings.hf_prefix_cache_mb * 2**20,
    )


@asynccontextmanager
async def model_services(app: Any, settings: Settings) -> AsyncIterator[None]:
    registry = build_registry(settings)
    monitor = HealthMonitor(
        registry, interval_s=settings.health_check_interval_s, timeout_s=settings.catalog_provider_timeout_s
    )
    catalog = ModelCatalog(
        registry,
        monitor,
        ttl_s=settings.catalog_ttl_s,
        provider_timeout_s=settings.catalog_provider_timeout_s,
        stale_s=settings.catalog_stale_s,
    )
    app.state.registry, app.state.catalog, app.state.health_monitor = registry, catalog, monitor
    discovered = DiscoveredModels()
    catalog.on_refreshed.append(discovered.record)
    app.state.discovered = discovered
    await registry.initialize()
    monitor.start()
    try:
        yield
    finally:
        await monitor.stop()
        await catalog.close()
        await registry.shutdown()
