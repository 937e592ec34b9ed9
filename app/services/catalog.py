"""The model catalog: every provider's models in one list, fast, even when a provider is down or slow.

All providers are asked at once, each with its own timeout. The merged list is cached for `ttl_s`;
after that the cached list is still served while one refresh runs in the background. A provider whose
listing fails keeps its last good list for `stale_s` (marked stale in its status), then drops out; it
never empties or delays the rest. Order is stable: providers in registration order, then names.

The lists clients choose from (`models`, `available_model_names`) leave out models disabled in the
configuration; routing and single-model look-ups still see them, so a request for one gets a clear refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from app.config.snapshot import ConfigSource
from app.errors import ErrorCode, ServiceError
from app.providers.base import ModelProvider
from app.providers.names import matches
from app.providers.registry import ProviderRegistry, ResolvedModel
from app.providers.types import ModelInfo, ProviderStatus
from app.services.health_monitor import HealthMonitor

log = logging.getLogger(__name__)

Capability = Literal["text", "vision", "streaming"]
CAPABILITIES: tuple[Capability, ...] = ("text", "vision", "streaming")


@dataclass
class _Listing:
    """One provider's last listing attempt, and its last good list."""

    models: list[ModelInfo] = field(default_factory=list)
    listed_at: float | None = None  # when `models` was fetched (monotonic)
    error: str | None = None  # the last attempt's failure, None when it succeeded


class ModelCatalog:
    def __init__(
        self,
        registry: ProviderRegistry,
        monitor: HealthMonitor,
        *,
        ttl_s: float = 30.0,
        provider_timeout_s: float = 3.0,
        stale_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        config: ConfigSource | None = None,
    ) -> None:
        self.registry = registry
        #: which models are enabled (the published configuration); without one, every model is
        self.config = config
        self.monitor = monitor
        self.ttl_s = ttl_s
        self.provider_timeout_s = provider_timeout_s
        self.stale_s = stale_s
        self._clock = clock
        self._listings: dict[str, _Listing] = {}
        self._refreshed_at: float | None = None
        self._refreshing: asyncio.Task[None] | None = None
        #: called with the whole list after each refresh (e.g. to store discovered models); errors are logged
        self.on_refreshed: list[Callable[[list[ModelInfo]], Awaitable[object]]] = []
        registry.use_catalog(self.snapshot, self.info)

    # -- the list ------------------------------------------------------------------------------------------

    def snapshot(self) -> list[ModelInfo]:
        """The last merged list, without asking anyone (routing reads this)."""
        models: list[ModelInfo] = []
        for provider in self.registry.providers:
            listing = self._listings.get(provider.name)
            if listing is not None and self._usable(listing):
                models.extend(sorted(listing.models, key=lambda m: (m.name.lower(), m.name)))
        return models

    async def models(
        self,
        search: str | None = None,
        provider: str | None = None,
        capability: Capability | None = None,
        loaded: bool | None = None,
    ) -> list[ModelInfo]:
        """The merged list, filtered; `search` matches substrings and close spellings of the name."""
        if capability is not None and capability not in CAPABILITIES:
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"Unknown capability {capability!r}; use one of {', '.join(CAPABILITIES)}",
                details={"capability": capability},
            )
        found = await self.enabled()
        if provider:
            found = [m for m in found if m.provider == provider.rstrip("/")]
        if capability:
            found = [m for m in found if getattr(m.capabilities, capability)]
        if loaded is not None:
            found = [m for m in found if m.loaded == loaded]
        if search and search.strip():
            found = [m for m in found if matches(search, m.native_name, m.name)]
        return found

    async def available_model_names(self) -> list[str]:
        """For GraphQL `availableModels`: the bare-name provider's (Ollama's) models by their bare names,
        as the old service listed them, and every other model by its full name (`hf/<alias>`)."""
        bare = self.registry.bare_provider
        return [m.native_name if m.provider == bare else m.name for m in await self.enabled()]

    async def enabled(self) -> list[ModelInfo]:
        """The cached list without the models the configuration disables: what clients may choose from."""
        models = await self.current()
        if self.config is None:
            return models
        config = self.config.current
        return [m for m in models if config.for_model(m.name, m).enabled]

    async def find(self, name: str) -> ModelInfo | None:
        """The model a name routes to, or None when it is unknown (or its provider cannot say)."""
        try:
            resolved = self.registry.resolve(name)
        except ServiceError:
            return None
        return await self.info(resolved)

    async def info(self, resolved: ResolvedModel) -> ModelInfo | None:
        """What the catalog knows of a routed model: its listing, else the provider's answer, else None."""
        for model in await self.current():
            if model.provider == resolved.provider.name and model.native_name == resolved.native_name:
                return model
        try:  # not listed yet (pulled a moment ago?): ask the provider, briefly
            return await asyncio.wait_for(resolved.provider.model_info(resolved.native_name), self.provider_timeout_s)
        except (ServiceError, TimeoutError):
            return None

    async def get(self, name: str) -> ModelInfo:
        """Like `find`, but MODEL_NOT_FOUND (with the closest names) instead of None."""
        self.registry.resolve(name)  # a clear error for an unconfigured prefix
        model = await self.find(name)
        if model is None:
            raise self.registry.not_found(name)
        return model

    async def current(self) -> list[ModelInfo]:
        """The cached list; the first call waits for a listing, later ones refresh in the background."""
        if self._refreshed_at is None:
            await self.refresh()
        elif self._clock() - self._refreshed_at >= self.ttl_s:
            self._start_refresh()
        return self.snapshot()

    async def refresh(self) -> None:
        """Ask every provider now (joins a refresh already running)."""
        self._start_refresh()
        assert self._refreshing is not None
        await asyncio.shield(self._refreshing)

    async def close(self) -> None:
        """Stop a refresh still running (at shutdown, before the providers close)."""
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refreshing

    def invalidate(self) -> None:
        """The next read refreshes (after a load, unload or export)."""
        if self._refreshed_at is not None:
            self._refreshed_at = self._clock() - self.ttl_s

    def _start_refresh(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh_all(), name="catalog-refresh")

    async def _refresh_all(self) -> None:
        providers = self.registry.providers
        await asyncio.gather(*(self._refresh_one(p) for p in providers))
        for name in list(self._listings):
            if self.registry.get(name) is None:
                del self._listings[name]
        self._refreshed_at = self._clock()
        for listener in self.on_refreshed:
            try:
                await listener(self.snapshot())
            except Exception:
                log.exception("a model-list listener failed")

    async def _refresh_one(self, provider: ModelProvider) -> None:
        listing = self._listings.setdefault(provider.name, _Listing())
        try:
            models = await asyncio.wait_for(provider.list_models(), self.provider_timeout_s)
        except TimeoutError:
            listing.error = f"{provider.name} did not list its models within {self.provider_timeout_s:g}s"
        except ServiceError as exc:
            listing.error = exc.message
        except Exception as exc:
            log.error("listing the models of %s failed", provider.name, exc_info=exc)
            listing.error = f"listing failed: {type(exc).__name__}"
        else:
            listing.models, listing.listed_at, listing.error = models, self._clock(), None
            return
        log.warning("model list of %s: %s", provider.name, listing.error)

    def _usable(self, listing: _Listing) -> bool:
        if listing.listed_at is None:
            return False
        return listing.error is None or self._clock() - listing.listed_at <= self.stale_s

    # -- providers -------------------------------------------------------------------------------------------

    async def providers(self) -> list[ProviderStatus]:
        """Every provider with its last health, its circuit and how its last listing went."""
        await self.current()
        statuses = []
        for provider in self.registry.providers:
            listing = self._listings.get(provider.name) or _Listing()
            usable = self._usable(listing)
            statuses.append(
                ProviderStatus(
                    name=provider.name,
                    prefix=provider.prefix,
                    health=self.monitor.latest(provider.name),
                    circuit=self.registry.breaker(provider.name).snapshot(),
                    model_count=len(listing.models) if usable else 0,
                    listing_error=listing.error,
                    stale=usable and listing.error is not None,
                )
            )
        return statuses

    # -- load and unload ---------------------------------------------------------------------------------------

    async def load(self, name: str) -> ModelInfo:
        """Load a model into memory now (where its provider supports it); returns its fresh info."""
        resolved = self.registry.resolve(name)
        await resolved.provider.load(resolved.native_name)
        return await self._after_change(resolved.name)

    async def unload(self, name: str) -> ModelInfo:
        resolved = self.registry.resolve(name)
        await resolved.provider.unload(resolved.native_name)
        return await self._after_change(resolved.name)

    async def _after_change(self, name: str) -> ModelInfo:
        self.invalidate()
        await self.refresh()
        return await self.get(name)
