"""`ConfigurationService`: the running configuration, its hot reload, its history and its change events.

The service holds one `EffectiveConfig` (see config_model.py) and replaces it whole: a change (a new
config file, a PATCH, a restore) is validated first, the new Ollama provider (when its keys changed) is
built and opened, and only then is everything swapped in one step with no `await` in between, so no
request ever sees half a configuration. The chat turn reads `chat.settings` and `for_model` once per
turn, so a reply already streaming keeps what it started with; a replaced provider is closed only after
`stream_timeout_s`, when no stream can still be using it. An invalid change keeps the running
configuration and is recorded (log, `last_error`, a `config_revisions` row with valid=false).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from app.db.tables import ConfigRevision
from app.db.text import without_nul
from app.errors import ErrorCode, ServiceError
from app.providers.base import ModelProvider
from app.providers.hf import HFProvider
from app.providers.ollama import OllamaProvider
from app.providers.types import ModelInfo
from app.services import config_model as cm
from app.services.conversations import default_conversation_model
from app.services.discovered import DiscoveredModels
from app.services.model_services import build_hf_provider, hf_pool_settings
from app.services.model_settings import ModelSettings
from app.services.password_attempts import password_attempt_limits
from app.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The file `load_settings` reads: `BETH_CONFIG`, else `./beth.toml` (watched even before it exists)."""
    env = os.environ if environ is None else environ
    return Path(env.get("BETH_CONFIG", "").strip() or "beth.toml").expanduser()


def error_dict(error: SettingsError) -> dict[str, Any]:
    return {
        "key": error.key,
        "value": cm.redact(str(error.key), cm.plain(error.value)),
        "reason": error.reason,
        "source": str(error.source),
    }


class ConfigurationService:
    def __init__(self, start: Settings, path: Path | None, registry: Any = None, catalog: Any = None) -> None:
        self.start_settings = start
        self.path = path
        self.registry = registry
        self.catalog = catalog
        #: set by the lifespan: the chat service whose `settings` a change replaces
        self.chat: Any = None
        #: set by the lifespan: the conversation service whose default model follows the settings
        self.conversations: Any = None
        #: set by the lifespan: the stored model configurations (model_metadata), kept in line with this
        self.discovered: DiscoveredModels | None = None
        self.current = cm.build(start, {}, {})
        self.last_error: dict[str, Any] | None = None
        self._signature: tuple[int, int] | None = None
        self._content_hash: str | None = None
        self._lock = asyncio.Lock()
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    # -- what the chat turn asks -----------------------------------------------------------------------

    def for_model(self, name: str, info: ModelInfo | None) -> ModelSettings:
        return self.current.for_model(name, info)

    # -- life cycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the file (an invalid one stops start-up, like `load_settings`), bring back the changes made
        through the API before the last stop, apply what the providers were not built with (provider
        tables, API values), record it, and start watching."""
        text = self._read()
        document = cm.parse_toml(text) if text is not None else {}
        # what model_services built the providers from: the start-up settings, no provider tables
        built = replace(cm.build(self.start_settings, document, {}), providers={}, provider_sources={})
        self.current = built
        api = await stored_api_layer()
        try:
            new = cm.build(self.start_settings, document, api)
        except SettingsError as exc:
            log.warning(
                "the changes made through the API before the last stop no longer validate (%s); starting without them",
                exc,
            )
            await self._record("reset", api, {}, valid=False, error=str(exc), applied=False)
            new = cm.build(self.start_settings, document, {})
        self._content_hash = _digest(text)
        await self._apply(built, new)
        await self._record(
            "startup",
            document,
            cm.diff(cm.flat_view(built), cm.flat_view(new)),
            valid=True,
            error=None,
            applied=True,
        )
        self._watcher = asyncio.create_task(self._watch(), name="config-watch")

    async def stop(self) -> None:
        tasks = [t for t in (self._watcher, *self._retiring) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- changes -----------------------------------------------------------------------------------------

    async def check_file(self) -> dict[str, Any] | None:
        """Reload when the file's content changed since it was last seen; returns the revision, if any."""
        signature = self._stat()
        if signature == self._signature:
            return None
        self._signature = signature
        text = self._read()
        if _digest(text) == self._content_hash:
            return None
        self._content_hash = _digest(text)
        if text is None:
            error = SettingsError("BETH_CONFIG", str(self.path), "the config file was removed", "file")
            return await self._refuse("file", {}, error)
        try:
            document = cm.parse_toml(text)
        except SettingsError as exc:
            return await self._refuse("file", {"text": text}, exc)
        return await self._change("file", document, document, self.current.api)

    async def patch(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply API changes over the file (None removes an API value); env-set keys are refused."""
        normalized = _snake_keys(changes)
        at_start = sorted(k for k in normalized if k in cm.RESTART_KEYS or cm.is_secret(k))
        if at_start:
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                f"{', '.join(at_start)} cannot be changed through the API: "
                "set it in the config file or the environment (it takes effect at the next start)",
                details={"keys": at_start},
            )
        env_keys = sorted(k for k in normalized if self.current.sources.get(k) == "env")
        if env_keys:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"{', '.join(env_keys)} set by the environment ({', '.join(cm.env_name(k) for k in env_keys)}); "
                "change the environment and restart instead",
                details={"keys": env_keys},
            )
        api = cm.merge(self.current.api, normalized)
        return await self._change("api", normalized, self.current.file, api, raise_invalid=True)

    async def restore(self, text: str) -> dict[str, Any]:
        """Replace the file's configuration with a backup, validated first; API changes are dropped."""
        try:
            document = cm.parse_toml(text)
        except SettingsError as exc:
            await self._refuse("restore", {"text": text}, exc)
            raise _invalid([exc]) from None
        revision = await self._change("restore", document, document, {}, raise_invalid=True)
        if self.path is not None:
            self.path.write_text(text, encoding="utf-8")
            self._signature, self._content_hash = self._stat(), _digest(text)
        return revision

    def validate(self, document: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every error a document would raise as the config file; applies nothing."""
        errors = cm.document_errors(document, "file")
        if not errors:
            try:
                cm.build(self.start_settings, dict(document), self.current.api)
            except SettingsError as exc:
                errors = [exc]
        return [error_dict(e) for e in errors]

    def backup(self) -> str:
        return cm.to_toml(cm.configured_document(self.current))

    # -- history and events --------------------------------------------------------------------------------

    async def revisions(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = (
            await ConfigRevision.select()
            .order_by(ConfigRevision.id, ascending=False)
            .limit(limit)
            .output(load_json=True)
        )
        return [_revision_view(row) for row in rows]

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Each recorded revision, as it happens, until the caller stops iterating."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=100)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    # -- internals -----------------------------------------------------------------------------------------

    async def _change(
        self, source: str, content: Mapping[str, Any], file: cm.Document, api: cm.Document, *, raise_invalid=False
    ) -> dict[str, Any]:
        async with self._lock:
            try:
                new = cm.build(self.start_settings, file, api)
            except SettingsError as exc:
                errors = cm.document_errors(file, "file") + cm.document_errors(api, "api") or [exc]
                revision = await self._refuse(source, content, errors[0])
                if raise_invalid:
                    raise _invalid(errors) from None
                return revision
            old = self.current
            await self._apply(old, new)
            self.last_error = None
            changes = cm.diff(cm.flat_view(old), cm.flat_view(new))
            log.info("configuration applied from %s: %s", source, ", ".join(changes) or "no changes")
            return await self._record(source, content, changes, valid=True, error=None, applied=True)

    async def _refuse(self, source: str, content: Mapping[str, Any], error: SettingsError) -> dict[str, Any]:
        self.last_error = {**error_dict(error), "at": datetime.now(UTC).isoformat(), "origin": source}
        log.warning("configuration change from %s refused, keeping the running one: %s", source, error)
        return await self._record(source, content, {}, valid=False, error=str(error), applied=False)

    async def _apply(self, old: cm.EffectiveConfig, new: cm.EffectiveConfig) -> None:
        """Swap `new` in: providers built and opened first, then everything replaced with no `await` in
        between; the `hf` pool is reconfigured last (it may unload idle models and preload new ones)."""
        commit = await self._prepare_providers(old, new)
        self.current = new
        if self.chat is not None:
            self.chat.settings = new.settings
        if self.conversations is not None:
            settings = new.settings
            self.conversations.default_model = default_conversation_model(
                settings.ollama_enabled, settings.hf_default_model
            )
            self.conversations.attempts.configure(**password_attempt_limits(settings))
        commit()
        if self.discovered is not None:
            try:
                await self.discovered.sync_settings()
            except Exception:  # the change is in effect; the stored copy catches up at the next change
                log.exception("could not store the models' new settings in model_metadata")
        hf = self.registry.get(HFProvider.name) if self.registry is not None else None
        pool = hf_pool_settings(new.settings)
        if isinstance(hf, HFProvider) and pool != hf_pool_settings(old.settings):
            await hf.reconfigure(pool)

    async def _prepare_providers(self, old: cm.EffectiveConfig, new: cm.EffectiveConfig) -> Callable[[], None]:
        """Build and open the providers whose settings changed (the Ollama hosts: the main one from the
        `ollama_*` keys, the others from `[providers.<name>]`; the `hf` provider when its models directory
        moved); the returned commit swaps them in and retires the ones they replace or that went away."""
        registry = self.registry
        if registry is None:
            return lambda: None
        wanted_old, wanted_new = _ollama_hosts(old), _ollama_hosts(new)
        fresh: dict[str, ModelProvider] = {}
        hf = registry.get(HFProvider.name)
        if isinstance(hf, HFProvider) and old.settings.models_dir != new.settings.models_dir:
            fresh_hf = build_hf_provider(new.settings)
            fresh_hf.pool.listeners.extend(hf.pool.listeners)  # metrics follow the pool in service
            await fresh_hf.initialize()
            fresh[HFProvider.name] = fresh_hf
        for name, table in wanted_new.items():
            if wanted_old.get(name) != table or registry.get(name) is None:
                provider = OllamaProvider(
                    table.host,
                    timeout_s=table.timeout_s,
                    num_ctx=table.num_ctx,
                    keep_alive_s=table.keep_alive_s,
                    name=name,
                )
                await provider.initialize()
                fresh[name] = provider
        gone = [name for name in wanted_old if name not in wanted_new]

        def commit() -> None:
            settings = new.settings
            registry.fallback_models = settings.fallback_models
            registry.retries, registry.retry_backoff_s = settings.provider_retries, settings.provider_retry_backoff_s
            if not fresh and not gone:
                return
            previous = [p.name for p in registry.providers]
            retired = [registry.unregister(name) for name in [*fresh, *gone]]
            kept = {p.name: p for p in registry.providers}
            for name in kept:
                registry.unregister(name)
            # the catalog lists providers in registration order: the Ollama hosts as configured, then the rest
            order = [*wanted_new, *(name for name in previous if name not in wanted_new and name not in gone)]
            for name in order:
                provider = fresh.get(name) or kept.get(name)
                if provider is not None:
                    registry.register(provider)
            for provider in retired:
                if provider is not None:
                    self._retire(provider, old.settings.stream_timeout_s)
            if self.catalog is not None:
                self.catalog.invalidate()

        return commit

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

    async def _record(
        self,
        source: str,
        content: Mapping[str, Any],
        changes: Mapping[str, Any],
        *,
        valid: bool,
        error: str | None,
        applied: bool,
    ) -> dict[str, Any]:
        safe_content = {k: cm.redact(k, v) for k, v in content.items()}
        row = ConfigRevision(
            created_at=datetime.now(UTC),
            source=source,
            content=msgspec.json.encode(safe_content).decode(),
            diff=msgspec.json.encode(changes).decode(),
            valid=valid,
            # a refused key or value is quoted in the error; PostgreSQL's text cannot hold a NUL in it
            error=without_nul(error) if error else None,
            applied=applied,
        )
        await row.save()
        view = _revision_view(
            {**row.to_dict(), "content": safe_content, "diff": dict(changes)},
        )
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(view)
        return view

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.current.settings.config_reload_interval_s)
            try:
                await self.check_file()
            except Exception:  # the watcher must outlive one bad read (a file half-written, a database blip)
                log.exception("config file check failed")

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size) if stat is not None else None

    def _read(self) -> str | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            return self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError("BETH_CONFIG", str(self.path), f"cannot read the file: {exc}", "file") from exc


def _ollama_hosts(config: cm.EffectiveConfig) -> dict[str, cm.ProviderTable]:
    """Every enabled Ollama host of a configuration, by provider name: the main one first."""
    settings = config.settings
    hosts: dict[str, cm.ProviderTable] = {}
    if settings.ollama_enabled:
        hosts[OllamaProvider.name] = cm.ProviderTable(
            type="ollama",
            host=settings.ollama_host,
            timeout_s=settings.ollama_timeout_s,
            num_ctx=settings.ollama_num_ctx,
            keep_alive_s=settings.ollama_keep_alive_s,
        )
    hosts.update({name: table for name, table in config.providers.items() if table.enabled})
    return hosts


async def stored_api_layer() -> cm.Document:
    """The changes made through the API, replayed from the revisions since the last restore (which
    drops them), so that they survive a restart."""
    rows = (
        await ConfigRevision.select(ConfigRevision.source, ConfigRevision.content)
        .where(ConfigRevision.applied.eq(True) | (ConfigRevision.source == "reset"))
        .order_by(ConfigRevision.id)
        .output(load_json=True)
    )
    api: cm.Document = {}
    for row in rows:
        if row["source"] in ("restore", "reset"):
            api = {}
        elif row["source"] == "api" and isinstance(row["content"], Mapping):
            api = cm.merge(api, row["content"])
    return api


def _digest(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def _snake_keys(changes: Mapping[str, Any]) -> dict[str, Any]:
    """API bodies may spell keys in camelCase; model names (the `models` table's keys) stay as they are."""
    result: dict[str, Any] = {}
    for key, value in changes.items():
        name = cm.snake_case(key)
        if name in cm.TABLES and isinstance(value, Mapping):
            result[name] = {
                model: _snake_keys(table) if isinstance(table, Mapping) else table for model, table in value.items()
            }
        elif isinstance(value, Mapping):
            result[name] = _snake_keys(value)
        else:
            result[name] = value
    return result


def _invalid(errors: list[SettingsError]) -> ServiceError:
    return ServiceError(
        ErrorCode.INVALID_REQUEST,
        str(errors[0]),
        details={"errors": [error_dict(e) for e in errors]},
    )


def _revision_view(row: Mapping[str, Any]) -> dict[str, Any]:
    created = row.get("created_at")
    return {
        "id": row.get("id"),
        "createdAt": created.isoformat() if isinstance(created, datetime) else created,
        "source": row.get("source"),
        "diff": row.get("diff") or {},
        "valid": bool(row.get("valid")),
        "error": row.get("error"),
        "applied": bool(row.get("applied")),
    }


@contextlib.asynccontextmanager
async def configuration(app: Any, settings: Settings) -> AsyncIterator[ConfigurationService]:
    """The lifespan part: after the providers and the chat turn exist, attach and start the service."""
    service = ConfigurationService(
        settings, config_path(), getattr(app.state, "registry", None), getattr(app.state, "catalog", None)
    )
    chat = getattr(app.state, "chat", None)
    service.chat = chat
    service.conversations = getattr(app.state, "conversations", None)
    service.discovered = getattr(app.state, "discovered", None)
    if service.discovered is not None:
        service.discovered.model_settings = service
    if service.catalog is not None:
        service.catalog.model_settings = service
    await service.start()
    if chat is not None:
        chat.model_settings = service
    app.state.config = service
    try:
        yield service
    finally:
        await service.stop()
