"""`ModelPool`: which exported models are in memory, and for how long.

Loads on demand (one load per model at a time; concurrent callers wait for the same load), counts leases so a
model in use is never unloaded, evicts the least recently used idle model when a load would pass the memory
budget (weights plus a full-context KV cache, plus the prefixes each model saved, which go first), unloads
models idle longer than the keep-alive, and loads a preload list at start. Each loaded model batches its own
requests (inference/scheduler.py) within the pool's batch and queue limits. All bookkeeping runs on the event
loop; loading and closing run in worker threads. One `PoolSettings` value configures it, at start and on reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inference.chat_model import ChatModel
from inference.errors import (
    HF_MEMORY_ERROR,
    HF_MODEL_LOAD_FAILED,
    HF_MODEL_NOT_FOUND,
    HF_OVERLOADED,
    InferenceError,
)
from inference.execution import RuntimeOptions
from inference.export_folder import ExportInfo, is_export_folder, read_export
from inference.pool_settings import PoolSettings

log = logging.getLogger(__name__)

Loader = Callable[[ExportInfo, RuntimeOptions], ChatModel]


@dataclass(slots=True)
class _Entry:
    info: ExportInfo
    size: int
    loading: asyncio.Future[ChatModel]
    model: ChatModel | None = None
    leases: int = 0
    last_used: float = 0.0
    pinned: bool = False
    unload_requested: bool = False
    unload_reason: str = "requested"


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """What the pool did, for the service's metrics: a load (and how long it took), an unload and why, or a
    request admitted to a model's batch (and how long it waited in the queue).

    Unload reasons: `idle` (past the keep-alive), `evicted` (room for another model), `requested`
    (an explicit unload), `reconfigured` (new runtime options or limits), `closed`, or the caller's own
    (the service's `removed`, before an export is deleted).
    """

    kind: Literal["loaded", "load_failed", "unloaded", "admitted"]
    alias: str
    seconds: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """What `loaded()` reports about one model in memory (for health and `models ps`)."""

    alias: str
    size_bytes: int
    leases: int
    idle_s: float
    provider: str
    running: int = 0  # generations in the model's batch now
    queued: int = 0  # requests waiting for a place in it


class ModelPool:
    """The models of one `models_dir`, loaded when leased and unloaded under memory or idle pressure."""

    def __init__(
        self, models_dir: Path | str, settings: PoolSettings | None = None, loader: Loader | None = None
    ) -> None:
        self.models_dir = Path(models_dir)
        self.settings = settings or PoolSettings()
        self._loader: Loader = loader or ChatModel.load
        self._entries: dict[str, _Entry] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._admission = asyncio.Lock()  # one admission decision (budget, eviction) at a time
        self._loop: asyncio.AbstractEventLoop | None = None
        #: called with every PoolEvent, on the event loop; a listener that raises is logged and skipped
        self.listeners: list[Callable[[PoolEvent], None]] = []

    @property
    def options(self) -> RuntimeOptions:
        return self.settings.runtime_options

    @property
    def memory_budget_bytes(self) -> int | None:
        return self.settings.memory_budget_bytes

    @property
    def max_loaded_models(self) -> int:
        """Most models in memory at once (0: no limit); a load past it evicts the least recently used idle one."""
        return self.settings.max_loaded_models

    @property
    def keep_alive_s(self) -> float | None:
        return self.settings.keep_alive_s

    @property
    def preload(self) -> tuple[str, ...]:
        return self.settings.preload

    async def __aenter__(self) -> ModelPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Load the preload list and start unloading idle models."""
        await self._load_preload()
        self._start_sweeper()

    async def reconfigure(self, settings: PoolSettings) -> None:
        """Apply new settings to the running pool (the service's hot reload), without disturbing requests.

        New runtime options (provider, threads) apply to the next load, so models loaded with the old ones
        are unloaded: idle ones now, ones in use when their last lease ends. Batch and queue limits apply
        to loaded models' next requests; drafting is each generation's own. A smaller budget or model count
        evicts idle models until it holds. Models that leave the preload list lose their pin; new entries
        are loaded. Raises like `acquire` when a new preload entry cannot load (the rest still applies).
        """
        async with self._admission:
            old = self.settings
            self.settings = settings
            stale = old.runtime_options != settings.runtime_options
            for alias, entry in list(self._entries.items()):
                entry.pinned = entry.pinned and alias in settings.preload
                if stale:
                    await self.unload(alias, reason="reconfigured")
                elif entry.model is not None:
                    entry.model.set_limits(settings.batch_limits)
            await self._evict_idle(lambda: self._fits(0, 0), "to honour the new pool settings")
        if settings.keep_alive_s != old.keep_alive_s:
            await self._restart_sweeper()
        await self._load_preload()

    async def _load_preload(self) -> None:
        for alias in self.preload:
            await self.acquire(alias)
            entry = self._entries[alias]
            entry.pinned = True
            await self.release(alias)

    def _start_sweeper(self) -> None:
        if self.keep_alive_s is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="model-pool-sweeper")

    async def _stop_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _restart_sweeper(self) -> None:
        await self._stop_sweeper()
        self._start_sweeper()

    async def close(self) -> None:
        """Unload everything (running generations are cancelled)."""
        await self._stop_sweeper()
        for alias in list(self._entries):
            await self._drop(alias, "closed")

    def available(self) -> list[str]:
        """Aliases of the export folders in `models_dir`, loaded or not."""
        if not self.models_dir.is_dir():
            return []
        return sorted(p.name for p in self.models_dir.iterdir() if is_export_folder(p))

    def info(self, alias: str) -> ExportInfo:
        """The export's facts without loading it (context length, size, quantization)."""
        return read_export(self._folder(alias))

    def loaded(self) -> list[LoadedModel]:
        now = time.monotonic()
        return [
            LoadedModel(
                alias,
                e.size,
                e.leases,
                0.0 if e.leases else now - e.last_used,
                e.model.provider,
                e.model.running,
                e.model.queued,
            )
            for alias, e in self._entries.items()
            if e.model is not None
        ]

    def in_use(self, alias: str) -> bool:
        """Whether `alias` is leased (generating, or waiting in its queue) or still loading."""
        entry = self._entries.get(alias)
        return entry is not None and (entry.leases > 0 or entry.model is None)

    @property
    def used_bytes(self) -> int:
        """Estimated bytes of the models loaded or loading, and of the prefixes they saved."""
        return sum(entry.size + (entry.model.saved_bytes if entry.model else 0) for entry in self._entries.values())

    @contextlib.asynccontextmanager
    async def lease(self, alias: str) -> AsyncIterator[ChatModel]:
        """`async with pool.lease(alias) as model:`; the model stays loaded until the block ends."""
        model = await self.acquire(alias)
        try:
            yield model
        finally:
            await self.release(alias)

    async def acquire(self, alias: str) -> ChatModel:
        """Take a lease on `alias`, loading it if needed; pair with `release`."""
        entry = self._entries.get(alias)
        if entry is None:
            entry = await self._begin_load(alias)
        entry.leases += 1
        try:
            model = await asyncio.shield(entry.loading)
        except BaseException:
            entry.leases -= 1
            raise
        entry.last_used = time.monotonic()
        return model

    async def release(self, alias: str) -> None:
        entry = self._entries.get(alias)
        if entry is None or entry.leases == 0:
            return
        entry.leases -= 1
        entry.last_used = time.monotonic()
        if entry.leases == 0 and (entry.unload_requested or self.keep_alive_s == 0):
            await self._drop(alias, entry.unload_reason if entry.unload_requested else "idle")

    async def unload(self, alias: str, reason: str = "requested") -> bool:
        """Unload now, or as soon as the last lease ends; False when it was not loaded."""
        entry = self._entries.get(alias)
        if entry is None:
            return False
        if entry.leases or entry.model is None:
            entry.unload_requested, entry.unload_reason = True, reason
            return True
        await self._drop(alias, reason)
        return True

    async def unload_idle(self) -> list[str]:
        """Unload unpinned models with no lease that were idle longer than the keep-alive."""
        if self.keep_alive_s is None:
            return []
        now = time.monotonic()
        idle = [
            alias
            for alias, e in self._entries.items()
            if e.model is not None and not e.leases and not e.pinned and now - e.last_used >= self.keep_alive_s
        ]
        for alias in idle:
            await self._drop(alias, "idle")
        return idle

    async def _begin_load(self, alias: str) -> _Entry:
        async with self._admission:
            if alias in self._entries:  # another caller started the same load meanwhile: share it
                return self._entries[alias]
            info = await asyncio.to_thread(read_export, self._folder(alias))
            size = info.estimated_bytes()
            await self._make_room(alias, size)
            loop = asyncio.get_running_loop()
            entry = _Entry(info=info, size=size, loading=loop.create_future())
            self._entries[alias] = entry
            self._tasks.add(loop.create_task(self._load(alias, entry), name=f"load-{alias}"))
            return entry

    async def _load(self, alias: str, entry: _Entry) -> None:
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(self._loader, entry.info, self.options)
        except BaseException as exc:
            self._entries.pop(alias, None)
            error = (
                exc
                if isinstance(exc, InferenceError)
                else InferenceError(HF_MODEL_LOAD_FAILED, f"cannot load {alias}: {exc}", {"alias": alias})
            )
            entry.loading.set_exception(error)
            entry.loading.exception()  # retrieved here so a load nobody waits for does not warn
            log.warning("loading %s failed: %s", alias, error.message)
            self._emit(PoolEvent("load_failed", alias, time.perf_counter() - started))
            return
        finally:
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
        model.set_limits(self.settings.batch_limits)  # limits changed by a reconfigure during the load
        self._report_waits(alias, model)
        entry.model = model
        entry.last_used = time.monotonic()
        entry.loading.set_result(model)
        self._emit(PoolEvent("loaded", alias, time.perf_counter() - started))
        if entry.unload_requested and not entry.leases:
            await self._drop(alias, entry.unload_reason)

    def _report_waits(self, alias: str, model: ChatModel) -> None:
        """Each request the model admits becomes an `admitted` event (its queue wait), on the event loop."""
        loop = asyncio.get_running_loop()

        def admitted(seconds: float) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._emit, PoolEvent("admitted", alias, seconds))

        model.on_admitted = admitted

    async def _make_room(self, alias: str, size: int) -> None:
        """Evict idle models, least recently used first, until `size` and one more model fit; refuse what
        never can (MEMORY_EXCEEDED) and what cannot while the others are in use."""
        budget = self.memory_budget_bytes
        if budget is not None and size > budget:
            raise InferenceError(
                HF_MEMORY_ERROR,
                f"{alias} needs about {size / 2**20:.0f} MiB (weights and KV cache) but the memory budget is "
                f"{budget / 2**20:.0f} MiB; raise the budget or export a quantized model",
                {"alias": alias, "needed_bytes": size, "budget_bytes": budget},
            )
        if not self._fits(size, 1):  # saved prefixes go before any model does
            for entry in self._entries.values():
                if entry.model is not None:
                    entry.model.drop_saved()
        await self._evict_idle(lambda: self._fits(size, 1), f"to make room for {alias}")
        if budget is not None and self.used_bytes + size > budget:
            raise InferenceError(
                HF_MEMORY_ERROR,
                f"{alias} does not fit next to the models in use ({self.used_bytes / 2**20:.0f} MiB of "
                f"{budget / 2**20:.0f} MiB); try again when their requests finish",
                {"alias": alias, "needed_bytes": size, "budget_bytes": budget, "used_bytes": self.used_bytes},
            )
        if not self._fits(0, 1):
            raise InferenceError(
                HF_OVERLOADED,
                f"{alias} cannot load: all {self.max_loaded_models} model slots (HF_MAX_LOADED_MODELS) hold "
                "models in use; try again when their requests finish",
                {"alias": alias, "max_loaded_models": self.max_loaded_models},
            )

    def _fits(self, size: int, slots: int) -> bool:
        """Whether `size` more bytes and `slots` more models stay within the budget and the model count."""
        budget, most = self.memory_budget_bytes, self.max_loaded_models
        return (budget is None or self.used_bytes + size <= budget) and (not most or len(self._entries) + slots <= most)

    async def _evict_idle(self, fits: Callable[[], bool], why: str) -> None:
        """Unload idle models, least recently used first, until `fits()`; models in use are never touched."""
        while not fits():
            idle = [(e.last_used, a) for a, e in self._entries.items() if e.model is not None and not e.leases]
            if not idle:
                return
            victim = min(idle)[1]
            log.info("unloading %s %s", victim, why)
            await self._drop(victim, "evicted")

    async def _drop(self, alias: str, reason: str) -> None:
        entry = self._entries.get(alias)
        if entry is None:
            return
        if entry.model is None:  # still loading: unload as soon as it is in, unless leased by then
            entry.unload_requested, entry.unload_reason = True, reason
            return
        del self._entries[alias]
        await asyncio.to_thread(entry.model.close)
        log.info("unloaded %s (%s)", alias, reason)
        self._emit(PoolEvent("unloaded", alias, reason=reason))

    def _emit(self, event: PoolEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # metrics must never break loading or unloading
                log.exception("pool listener failed on %s", event)

    async def _sweep(self) -> None:
        interval = max(0.05, min(self.keep_alive_s or 30.0, 30.0) / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.unload_idle()
            except Exception:
                log.exception("unloading idle models failed")

    def _folder(self, alias: str) -> Path:
        if not alias or "/" in alias or "\\" in alias or alias in (".", ".."):
            raise InferenceError(HF_MODEL_NOT_FOUND, f"{alias!r} is not a model name", {"alias": alias})
        folder = self.models_dir / alias
        if not is_export_folder(folder):
            raise InferenceError(
                HF_MODEL_NOT_FOUND,
                f"no exported model named {alias} in {self.models_dir}; run `beth-chat export`",
                {"alias": alias, "available": self.available()},
            )
        return folder
