"""`ConfigurationService`: validates changes, stores them as revisions, publishes the new snapshot.

A change (a new config file, a PATCH, a restore) is validated first; the reactions build what it needs (a new
Ollama provider when its keys changed), then the snapshot is published and their commits run with no `await`
in between, so no request ever sees half a configuration. Consumers read the published snapshot
(`ConfigSource.current`) when they need a value; a reply already streaming keeps the request it was built with. An
invalid change keeps the running configuration and is recorded (log, `last_error`, a `config_revisions` row with
valid=false).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec

from app.config import effective as cm
from app.config.effective import EffectiveConfig
from app.config.provider_store import drop_provider_tables, store_provider_changes, stored_provider_tables
from app.config.settings import RESTART_KEYS, Settings, SettingsError
from app.config.snapshot import ConfigSource
from app.config.toml import TABLES, Document, merge, parse_toml, plain, snake_case, to_toml
from app.db.tables import ConfigRevision
from app.db.text import without_nul
from app.errors import ErrorCode, ServiceError
from app.logging_setup import mask_secrets_in_text

log = logging.getLogger(__name__)


def error_dict(error: SettingsError) -> dict[str, Any]:
    return {
        "key": error.key,
        "value": cm.redact(str(error.key), plain(error.value)),
        "reason": error.reason,
        "source": str(error.source),
    }


class ConfigReaction(Protocol):
    """Something a change must act on besides publishing it: build what the new configuration needs first
    (`prepare`, whose returned commit runs with the publication, with no `await` in between), then do the
    slow part once it is in effect (`applied`)."""

    async def prepare(self, old: EffectiveConfig, new: EffectiveConfig) -> Callable[[], None]: ...

    async def applied(self, old: EffectiveConfig, new: EffectiveConfig) -> None: ...


class ConfigurationService:
    def __init__(
        self, start: Settings, path: Path | None, source: ConfigSource, reactions: Sequence[ConfigReaction] = ()
    ) -> None:
        self.start_settings = start
        self.path = path
        self.source = source
        self.reactions = tuple(reactions)
        self.last_error: dict[str, Any] | None = None
        #: the file as last read, and as seen changing at the last check (read once it holds still)
        self._signature: tuple[int, int, int] | None = None
        self._settling: tuple[int, int, int] | None = None
        self._content_hash: str | None = None
        self._lock = asyncio.Lock()
        self._subscribers: set[asyncio.Queue[Revision]] = set()

    @property
    def current(self) -> EffectiveConfig:
        """The published configuration."""
        return self.source.current

    # -- life cycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the file (an invalid one stops start-up, like `load_settings`), bring back the changes made
        through the API before the last stop, apply what the providers were not built with (provider
        tables, API values), and record it; `watch` follows the file from then on."""
        text = self._read()
        document = parse_toml(text) if text is not None else {}
        # what model_services built the providers from: the start-up settings, no provider tables
        built = replace(cm.build(self.start_settings, document, {}), providers={}, provider_sources={})
        self.source.publish(built)
        stored = await stored_provider_tables()
        api = await stored_api_layer(stored)
        try:
            new = cm.build(self.start_settings, document, api)
        except SettingsError as exc:
            log.warning(
                "the changes made through the API before the last stop no longer validate (%s); starting without them",
                exc,
            )
            await self._record("reset", api, {}, valid=False, error=str(exc), applied=False)
            await drop_provider_tables()
            new = cm.build(self.start_settings, document, {})
        self._content_hash = _digest(text)
        await self._apply(built, new)
        await store_provider_changes(stored, new)  # a table only the history had is stored from now on
        await self._record(
            "startup",
            document,
            cm.diff(cm.flat_view(built), cm.flat_view(new)),
            valid=True,
            error=None,
            applied=True,
        )

    # -- changes -----------------------------------------------------------------------------------------

    async def check_file(self) -> Revision | None:
        """Reload when the file's content changed since it was last seen; returns the revision, if any.

        A file is read once it held still from one check to the next and while it was read: an editor that
        truncates and then writes would otherwise be caught half-way, and an empty or cut-off file is often
        valid TOML that would be applied."""
        signature = self._stat()
        if signature == self._signature:
            return None
        if signature != self._settling:
            self._settling = signature
            return None
        text = self._read()
        if self._stat() != signature:
            return None
        self._signature = signature
        if _digest(text) == self._content_hash:
            return None
        self._content_hash = _digest(text)
        if text is None:
            error = SettingsError("BETH_CONFIG", str(self.path), "the config file was removed", "file")
            return await self._refuse("file", {}, error)
        try:
            document = parse_toml(text)
        except SettingsError as exc:
            return await self._refuse("file", {"text": mask_secrets_in_text(text)}, exc)
        return await self._change("file", lambda current: (document, document, current.api))

    async def patch(self, changes: Mapping[str, Any]) -> Revision:
        """Apply API changes over the file (None removes an API value); env-set keys are refused."""
        normalized = _snake_keys(changes)
        at_start = sorted(k for k in normalized if k in RESTART_KEYS or cm.is_secret(k))
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
        return await self._change(
            "api", lambda current: (normalized, current.file, merge(current.api, normalized)), raise_invalid=True
        )

    async def restore(self, text: str) -> Revision:
        """Replace the file's configuration with a backup, validated first; API changes are dropped.

        What a backup never holds (secrets, the database URL) stays as the running file has it, unless the
        backup names it."""
        try:
            document = parse_toml(text)
        except SettingsError as exc:
            await self._refuse("restore", {"text": mask_secrets_in_text(text)}, exc)
            raise _invalid([exc]) from None
        kept = {key: value for key, value in self.current.file.items() if _never_backed_up(key) and key not in document}
        if kept:
            document = {**kept, **document}
            text = _with_keys(kept, text, document)
        revision = await self._change("restore", lambda current: (document, document, {}), raise_invalid=True)
        if self.path is not None:
            self._write(text)
        return revision

    async def restore_revision(self, revision_id: int) -> Revision:
        """Go back to the configuration in effect just after an applied revision: restored like a backup of that
        moment (validated, written to the file, API changes dropped, recorded as a new `restore` revision).

        The history keeps no secrets: those of the running configuration are kept, and a secret it no longer has
        is left out."""
        recorded = await configuration_at(revision_id)
        running = cm.layered(self.current.file, self.current.api)
        document = {key: value for key, value in _unredacted(recorded, running).items() if not _never_backed_up(key)}
        revision = await self.restore(to_toml(document))
        log.info("configuration restored to revision %d", revision_id)
        return revision

    async def replace_provider(self, name: str, table: Mapping[str, Any]) -> Revision:
        """Store `table` as provider `name`'s API table (a new one, or replacing the one there whole), validated like a
        `[providers.<name>]` table of the file; over the file's table of that name, like every API value."""

        def layers(current: EffectiveConfig) -> tuple[Mapping[str, Any], Document, Document]:
            before: Mapping[str, Any] = current.api.get("providers", {}).get(name, {})
            api = {**current.api, "providers": {**current.api.get("providers", {}), name: dict(table)}}
            # the revision holds what replays to the new table: keys of the old one that went are removed (None)
            content = {"providers": {name: {**dict.fromkeys(k for k in before if k not in table), **table}}}
            return content, current.file, api

        return await self._change("api", layers, raise_invalid=True)

    async def remove_provider(self, name: str) -> Revision:
        """Remove provider `name`'s API table; the file's table of that name, if any, applies again."""

        def layers(current: EffectiveConfig) -> tuple[Mapping[str, Any], Document, Document]:
            providers = dict(current.api.get("providers", {}))
            if name not in providers:
                if name in current.file.get("providers", {}):
                    raise ServiceError(
                        ErrorCode.CONFLICT,
                        f"Provider {name} is defined in the config file, not through the API: remove it there",
                        details={"provider": name, "source": "file"},
                    )
                raise ServiceError(
                    ErrorCode.NOT_FOUND, f"No provider configuration named {name}", details={"provider": name}
                )
            del providers[name]
            api = {key: value for key, value in current.api.items() if key != "providers"}
            if providers:
                api["providers"] = providers
            return {"providers": {name: None}}, current.file, api

        return await self._change("api", layers, raise_invalid=True)

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
        return to_toml(cm.configured_document(self.current))

    # -- history and events --------------------------------------------------------------------------------

    async def revisions(self, limit: int = 100) -> list[Revision]:
        rows = (
            await ConfigRevision.select()
            .order_by(ConfigRevision.id, ascending=False)
            .limit(limit)
            .output(load_json=True)
        )
        return [_revision_view(row) for row in rows]

    async def events(self) -> AsyncIterator[Revision]:
        """Each recorded revision, as it happens, until the caller stops iterating."""
        queue: asyncio.Queue[Revision] = asyncio.Queue(maxsize=100)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    # -- internals -----------------------------------------------------------------------------------------

    async def _change(
        self,
        source: str,
        layers: Callable[[EffectiveConfig], tuple[Mapping[str, Any], Document, Document]],
        *,
        raise_invalid: bool = False,
    ) -> Revision:
        """Apply a change: `layers` gives, from the running configuration, what the revision records and the new
        file and API layers. It runs under the lock, so that changes made at the same time build on each other."""
        async with self._lock:
            content, file, api = layers(self.current)
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
            if source == "restore":
                await drop_provider_tables()
            else:
                await store_provider_changes(old.api.get("providers", {}), new)
            self.last_error = None
            changes = cm.diff(cm.flat_view(old), cm.flat_view(new))
            log.info("configuration applied from %s: %s", source, ", ".join(changes) or "no changes")
            return await self._record(source, content, changes, valid=True, error=None, applied=True)

    async def _refuse(self, source: str, content: Mapping[str, Any], error: SettingsError) -> Revision:
        log.warning("configuration change from %s refused, keeping the running one: %s", source, error)
        revision = await self._record(source, content, {}, valid=False, error=str(error), applied=False)
        # shown once it is in the history, so whoever sees the error finds its revision there too
        self.last_error = {**error_dict(error), "at": datetime.now(UTC).isoformat(), "origin": source}
        return revision

    async def _apply(self, old: EffectiveConfig, new: EffectiveConfig) -> None:
        """Publish `new`: what it needs is built first (providers opened), then it is published and every
        commit runs with no `await` in between, then the slow follow-ups (stored rows, the hf pool)."""
        commits = [await reaction.prepare(old, new) for reaction in self.reactions]
        self.source.publish(new)
        for commit in commits:
            commit()
        for reaction in self.reactions:
            try:
                await reaction.applied(old, new)
            except Exception:  # the change is in effect; the follower catches up at the next change
                log.exception("a follow-up of the configuration change failed (%s)", type(reaction).__name__)

    async def _record(
        self,
        source: str,
        content: Mapping[str, Any],
        changes: Mapping[str, Any],
        *,
        valid: bool,
        error: str | None,
        applied: bool,
    ) -> Revision:
        safe_content = cm.redact_tree(content)
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

    async def watch(self) -> None:
        """Reload the file when it changes, until cancelled (a background task)."""
        while True:
            await asyncio.sleep(self.current.settings.config_reload_interval_s)
            try:
                await self.check_file()
            except Exception:  # the watcher must outlive one bad read (a file half-written, a database blip)
                log.exception("config file check failed")

    def _stat(self) -> tuple[int, int, int] | None:
        """What tells a changed file: its inode (a file swapped in), modification time and size."""
        try:
            stat = self.path.stat() if self.path is not None else None
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size) if stat is not None else None

    def _write(self, text: str) -> None:
        """Replace the file's content in one step (written beside it, then renamed over it), so nobody, this
        service's watcher included, reads half of it; a symbolic link keeps pointing where it did."""
        assert self.path is not None
        target = self.path.resolve()
        staging = target.with_name(f".{target.name}.restoring")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, target)
        self._signature = self._settling = self._stat()
        self._content_hash = _digest(text)

    def _read(self) -> str | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            return self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError("BETH_CONFIG", str(self.path), f"cannot read the file: {exc}", "file") from exc


async def stored_api_layer(provider_tables: Document) -> Document:
    """The changes made through the API, replayed from the revisions since the last restore (which
    drops them), with the stored `provider_tables`, so that they survive a restart."""
    rows = (
        await ConfigRevision.select(ConfigRevision.source, ConfigRevision.content)
        .where(ConfigRevision.applied.eq(True) | (ConfigRevision.source == "reset"))
        .order_by(ConfigRevision.id)
        .output(load_json=True)
    )
    api: Document = {}
    for row in rows:
        if row["source"] in ("restore", "reset"):
            api = {}
        elif row["source"] == "api" and isinstance(row["content"], Mapping):
            api = merge(api, row["content"])
    # provider tables come from their rows, which keep their secrets; the history only has those stored before
    # provider tables had rows of their own
    providers = {**api.get("providers", {}), **provider_tables}
    if providers:
        api["providers"] = providers
    return api


async def configuration_at(revision_id: int) -> Document:
    """The configuration (file and API layers as one document) in effect just after an applied revision, as the
    history recorded it (secrets as `***`); NOT_FOUND for no such revision, INVALID_REQUEST for a refused one."""
    in_range = 0 < revision_id < 2**31  # the id column's range: a larger number is no revision either
    target = (
        await ConfigRevision.select(ConfigRevision.applied, ConfigRevision.error)
        .where(ConfigRevision.id == revision_id)
        .first()
        if in_range
        else None
    )
    if target is None:
        raise ServiceError(
            ErrorCode.NOT_FOUND, f"No configuration revision {revision_id}", details={"revision": revision_id}
        )
    if not target["applied"]:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            f"Revision {revision_id} was refused when it was made, so no configuration ran from it: "
            "restore an applied revision",
            details={"revision": revision_id, "error": target["error"]},
        )
    rows = (
        await ConfigRevision.select(ConfigRevision.source, ConfigRevision.content)
        .where(
            (ConfigRevision.id <= revision_id) & (ConfigRevision.applied.eq(True) | (ConfigRevision.source == "reset"))
        )
        .order_by(ConfigRevision.id)
        .output(load_json=True)
    )
    file: Document = {}
    api: Document = {}
    for row in rows:
        content = row["content"] if isinstance(row["content"], Mapping) else {}
        if row["source"] in ("startup", "file", "restore"):  # their content is the whole file
            file = dict(content)
        if row["source"] in ("restore", "reset"):
            api = {}
        elif row["source"] == "api":
            api = merge(api, content)
    return cm.layered(file, api)


def _never_backed_up(key: str) -> bool:
    """Top-level keys no backup holds: a restore keeps the running file's."""
    return cm.is_secret(key) or key == "database_url"


def _with_keys(kept: Mapping[str, Any], text: str, document: Document) -> str:
    """`text` with `kept` written above it; the whole document rewritten when the text's keys live in a
    `[service]` table, where keys above it would not be read."""
    combined = to_toml(kept) + "\n" + text
    return combined if parse_toml(combined) == document else to_toml(document)


def _unredacted(recorded: Mapping[str, Any], running: Mapping[str, Any]) -> Document:
    """A recorded document with each `***` replaced by the running value at the same place, or left out."""
    result: Document = {}
    for key, value in recorded.items():
        now = running.get(key) if isinstance(running, Mapping) else None
        if isinstance(value, Mapping):
            result[key] = _unredacted(value, now if isinstance(now, Mapping) else {})
        elif value == cm.REDACTED:
            if now is not None and now != cm.REDACTED:
                result[key] = now
        else:
            result[key] = value
    return result


def _digest(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def _snake_keys(changes: Mapping[str, Any]) -> dict[str, Any]:
    """API bodies may spell keys in camelCase; model names (the `models` table's keys) stay as they are."""
    result: dict[str, Any] = {}
    for key, value in changes.items():
        name = snake_case(key)
        if name in TABLES and isinstance(value, Mapping):
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


@dataclass(frozen=True)
class Revision:
    """One recorded change (applied or refused): what the history and the change events report."""

    id: int | None
    created_at: str | None
    source: str
    diff: Mapping[str, Any]
    valid: bool
    error: str | None
    applied: bool


def _revision_view(row: Mapping[str, Any]) -> Revision:
    created = row.get("created_at")
    return Revision(
        id=row.get("id"),
        created_at=created.isoformat() if isinstance(created, datetime) else created,
        source=str(row.get("source")),
        diff=row.get("diff") or {},
        valid=bool(row.get("valid")),
        error=row.get("error"),
        applied=bool(row.get("applied")),
    )
