"""The providers, built from the configuration: at start-up, and again when a change re-points them.

Provider order is the catalog's order: the Ollama hosts first (the old service listed only Ollama's models), the
OpenAI-compatible servers in the order configured, then the embedded `hf` models. The main Ollama and the main
OpenAI-compatible server come from service keys (`ollama_*`, `openai_*`), the others from `[providers.<name>]`
tables; all of them are described by one `ProviderTable` and built by `build_provider`. `ProviderReconciler` is the
configuration service's reaction for providers: it builds and opens the ones a change needs, swaps them into the
registry when the change is published, and closes the ones they replace once no stream can still be reading from
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from app.config.convert import resolve_api_key
from app.config.effective import EffectiveConfig, ProviderTable
from app.config.settings import Settings
from app.config.snapshot import ConfigSource
from app.providers.base import ModelProvider
from app.providers.hf import HFProvider
from app.providers.ollama import OllamaProvider
from app.providers.openai import OpenAIProvider
from app.providers.registry import ProviderRegistry
from inference.pool_settings import PoolSettings

log = logging.getLogger(__name__)


def build_registry(settings: Settings, config: ConfigSource) -> ProviderRegistry:
    """The registry and its providers as `settings` (the start-up values) describe them; the registry reads
    what may change while it runs (fallback models, retries) from `config`."""
    registry = ProviderRegistry(
        config,
        failure_threshold=settings.circuit_failure_threshold,
        cooldown_s=settings.circuit_cooldown_s,
        bare_provider=OllamaProvider.name,
    )
    for name, table in main_providers(settings).items():
        registry.register(build_provider(name, table))
    registry.register(build_hf_provider(settings))
    return registry


def build_provider(name: str, table: ProviderTable) -> ModelProvider:
    """The provider a table describes (an `env:NAME` API key read from the environment now)."""
    if table.type == "openai":
        return OpenAIProvider(
            table.base_url,
            api_key=resolve_api_key(table.api_key),
            models=table.models,
            timeout_s=table.timeout_s,
            name=name,
        )
    return OllamaProvider(
        table.host, timeout_s=table.timeout_s, num_ctx=table.num_ctx, keep_alive_s=table.keep_alive_s, name=name
    )


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


def main_providers(settings: Settings) -> dict[str, ProviderTable]:
    """The providers the service keys describe: the main Ollama (`ollama_*`) and, when `openai_base_url` is set,
    the main OpenAI-compatible server (`openai_*`)."""
    tables: dict[str, ProviderTable] = {}
    if settings.ollama_enabled:
        tables[OllamaProvider.name] = ProviderTable(
            type="ollama",
            host=settings.ollama_host,
            timeout_s=settings.ollama_timeout_s,
            num_ctx=settings.ollama_num_ctx,
            keep_alive_s=settings.ollama_keep_alive_s,
        )
    if settings.openai_base_url:
        tables[OpenAIProvider.name] = ProviderTable(
            type="openai",
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            timeout_s=settings.openai_timeout_s,
        )
    return tables


def remote_providers(config: EffectiveConfig) -> dict[str, ProviderTable]:
    """Every enabled provider reached over HTTP, by name: the main ones first, then the tables, Ollama hosts
    before OpenAI-compatible servers (the catalog's order)."""
    tables = main_providers(config.settings)
    enabled = {name: table for name, table in config.providers.items() if table.enabled}
    tables.update({name: table for name, table in enabled.items() if table.type == "ollama"})
    tables.update({name: table for name, table in enabled.items() if table.type != "ollama"})
    return tables


class ProviderReconciler:
    """Keeps the registry's providers in line with the published configuration."""

    def __init__(self, registry: ProviderRegistry, on_swapped: Callable[[], None] = lambda: None) -> None:
        self.registry = registry
        #: called after providers were swapped (the catalog forgets its cached list)
        self.on_swapped = on_swapped
        self._retiring: set[asyncio.Task[None]] = set()

    async def prepare(self, old: EffectiveConfig, new: EffectiveConfig) -> Callable[[], None]:
        """Build and open the providers whose settings changed (the Ollama hosts and OpenAI-compatible servers:
        the main ones from the `ollama_*` and `openai_*` keys, the others from `[providers.<name>]`; the `hf`
        provider when its models directory moved); the returned commit swaps them in and retires the ones they
        replace or that went away."""
        registry = self.registry
        wanted_old, wanted_new = remote_providers(old), remote_providers(new)
        fresh: dict[str, ModelProvider] = {}
        hf = registry.get(HFProvider.name)
        if isinstance(hf, HFProvider) and old.settings.models_dir != new.settings.models_dir:
            fresh_hf = build_hf_provider(new.settings)
            fresh_hf.pool.listeners.extend(hf.pool.listeners)  # metrics follow the pool in service
            await fresh_hf.initialize()
            fresh[HFProvider.name] = fresh_hf
        for name, table in wanted_new.items():
            if wanted_old.get(name) != table or registry.get(name) is None:
                provider = build_provider(name, table)
                await provider.initialize()
                fresh[name] = provider
        gone = [name for name in wanted_old if name not in wanted_new]

        def commit() -> None:
            if not fresh and not gone:
                return
            previous = [p.name for p in registry.providers]
            retired = [registry.unregister(name) for name in [*fresh, *gone]]
            kept = {p.name: p for p in registry.providers}
            for name in kept:
                registry.unregister(name)
            # the catalog lists providers in registration order: the remote ones as configured, then the rest
            order = [*wanted_new, *(name for name in previous if name not in wanted_new and name not in gone)]
            for name in order:
                provider = fresh.get(name) or kept.get(name)
                if provider is not None:
                    registry.register(provider)
            for provider in retired:
                if provider is not None:
                    self._retire(provider, old.settings.stream_timeout_s)
            self.on_swapped()

        return commit

    async def applied(self, old: EffectiveConfig, new: EffectiveConfig) -> None:
        """The `hf` pool is reconfigured last: it may unload idle models and preload new ones."""
        hf = self.registry.get(HFProvider.name)
        pool = hf_pool_settings(new.settings)
        if isinstance(hf, HFProvider) and pool != hf_pool_settings(old.settings):
            await hf.reconfigure(pool)

    async def stop(self) -> None:
        """Close the providers still waiting to retire now (the service is stopping)."""
        tasks = list(self._retiring)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _retire(self, provider: Any, after_s: float) -> None:
        """Close a replaced provider once no stream can still be reading from it."""

        async def close() -> None:
            try:
                if isinstance(provider, HFProvider):  # free the memory of its idle models now, the rest later
                    for model in provider.pool.loaded():
                        await provider.pool.unload(model.alias, reason="reconfigured")
                await asyncio.sleep(after_s)
            finally:
                await provider.shutdown()

        task = asyncio.create_task(close(), name=f"retire-{provider.name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
