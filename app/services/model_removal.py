"""Removing an exported (hf) model: its folder and its stored record, never while replies are generated with it.

`remove_export` is the one way, used by `beth-chat models remove` and by the admin action
`POST /api/v1/models/<name>/remove` (`remove_model`, which also refreshes the catalog). A model is in use
when a stream session of any process sharing the database is generating with it (an ACTIVE row naming it,
whose owner still keeps its heartbeat) or, in the service, when the pool holds a lease on it (a reply
waiting in its queue, a load in progress); then it is refused with MODEL_IN_USE and nothing changes. A
loaded model that is idle is unloaded first. The folder is renamed to a hidden name, which every listing
skips, before it is deleted, so nobody finds it half gone; an export that is a symbolic link loses the link,
never what it points to.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.db.tables import ModelRecord, StreamSession
from app.errors import ErrorCode, ServiceError
from app.providers.hf import HFProvider
from app.providers.registry import ProviderRegistry
from app.services.catalog import ModelCatalog
from app.services.streams import ACTIVE
from inference.export_folder import is_export_folder
from inference.pool import ModelPool

HF = "hf"


@dataclass(frozen=True)
class RemovedModel:
    name: str  # `hf/<alias>`
    path: Path  # the folder (or link) that was removed
    unloaded: bool  # it was loaded in this process, and unloaded first


async def remove_export(alias: str, *, models_dir: Path, pool: ModelPool | None, stale_s: float) -> RemovedModel:
    """Delete the export `alias` under `models_dir` and its `model_metadata` row.

    MODEL_NOT_FOUND when there is no such export; MODEL_IN_USE while replies are generated with it. `pool`
    is the service's (None from the command line, which has none); `stale_s` is how long a stream session
    keeps counting without its owner's heartbeat (`stream_stale_s`: after that its process is gone)."""
    name = f"{HF}/{alias}"
    folder = _export_folder(models_dir, alias)
    generating = await active_generations(alias, stale_s)
    # no await from the pool's check to its unload: a turn cannot lease the model in between
    leased = pool is not None and pool.in_use(alias)
    if generating or leased:
        replies = f"{generating} reply is" if generating == 1 else f"{generating} replies are"
        doing = f"{replies} being generated with it" if generating else "a reply or a load is under way"
        raise ServiceError(
            ErrorCode.MODEL_IN_USE,
            f"{name} is in use ({doing}); stop the replies or wait until they end, then remove it again",
            details={"model": name, "activeGenerations": generating},
        )
    unloaded = pool is not None and any(model.alias == alias for model in pool.loaded())
    if unloaded:
        assert pool is not None
        await pool.unload(alias, reason="removed")
    # the record first: should the folder then fail to go, the next listing stores the record again
    await ModelRecord.delete().where(ModelRecord.name == name)
    await asyncio.to_thread(_delete, folder)
    return RemovedModel(name=name, path=folder, unloaded=unloaded)


async def remove_model(name: str, *, registry: ProviderRegistry, catalog: ModelCatalog, stale_s: float) -> RemovedModel:
    """The admin action: a name that routes to an hf export (`hf/<alias>`, or a bare alias the catalog
    knows) removed by `remove_export` with the running pool, and the catalog refreshed so it is gone."""
    resolved = registry.resolve(name)
    provider = resolved.provider
    if not isinstance(provider, HFProvider):
        raise ServiceError(
            ErrorCode.CAPABILITY_UNSUPPORTED,
            f"{resolved.name} is not an exported model; only hf exports can be removed here",
            details={"model": resolved.name, "provider": provider.name},
        )
    removed = await remove_export(
        resolved.native_name, models_dir=provider.models_dir, pool=provider.pool, stale_s=stale_s
    )
    catalog.invalidate()
    await catalog.refresh()
    return removed


async def active_generations(alias: str, stale_s: float) -> int:
    """Replies being generated with `hf/<alias>` by any process sharing the database: ACTIVE sessions that
    name it (by its full name, or the bare alias they were asked under) with a heartbeat newer than
    `stale_s` (an older one belongs to a process that is gone, and the recovery sweep closes it)."""
    fresh = datetime.now(UTC) - timedelta(seconds=stale_s)
    return await StreamSession.count().where(
        (StreamSession.status == ACTIVE)
        & (StreamSession.updated_at >= fresh)
        & ((StreamSession.model == f"{HF}/{alias}") | ((StreamSession.provider == HF) & (StreamSession.model == alias)))
    )


def _export_folder(models_dir: Path, alias: str) -> Path:
    """The export's folder directly under `models_dir`; MODEL_NOT_FOUND for anything else."""
    folder = Path(models_dir) / alias
    usable = alias and "/" not in alias and "\\" not in alias and not alias.startswith(".")
    if not usable or not is_export_folder(folder):
        raise ServiceError(
            ErrorCode.MODEL_NOT_FOUND,
            f"No exported model named {alias!r} in {models_dir}",
            details={"model": f"{HF}/{alias}"},
        )
    return folder


def _delete(folder: Path) -> None:
    """Rename out of sight first (listings skip hidden names), then delete; a link is unlinked only."""
    hidden = folder.with_name(f".{folder.name}.removed-{uuid.uuid4().hex[:8]}")
    folder.rename(hidden)
    if hidden.is_symlink():
        hidden.unlink()
    else:
        shutil.rmtree(hidden)
