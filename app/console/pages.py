"""What each console page shows, gathered from the services: plain dicts for the templates and the live feed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.config import effective as cm
from app.config.settings import RESTART_KEYS, SETTING_KEYS
from app.console.charts import METRICS, UsageTable, bar_chart, bucket_label
from app.console.sources import ConsoleSources
from app.controllers.config import config_view
from app.db.tables import StreamSession
from app.services.catalog import ModelCatalog
from app.services.memory_guard import read_memory
from app.services.streams import StreamSessions
from app.services.usage import DEFAULT_WINDOW, Period, UsageStats, period_start

STARTED_AT = time.time()  # the console is imported when the app is built: close enough to the service's start
RECENT_ERRORS = 10


def service_version() -> str:
    try:
        return metadata.version("beth-chat-service")
    except metadata.PackageNotFoundError:
        return "unknown"


def redacted_url(url: str) -> str:
    """A database URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f} MiB"


def live_snapshot(sources: ConsoleSources, sessions: StreamSessions) -> dict[str, Any]:
    """The parts of the console that change by the second: what the live feed sends."""
    now, clock = time.time(), time.monotonic()
    reading = read_memory()
    pool = sources.hf_pool
    loaded = pool.loaded() if pool is not None else []
    streams = [
        {
            "id": s.id,
            "conversationId": s.conversation_id,
            "model": s.model,
            "provider": s.provider or "",
            "durationS": round(clock - s.opened_at, 1),
            "tokens": s.token_count,
        }
        for s in list(sessions.live.values())
    ]
    return {
        "uptimeS": round(now - STARTED_AT),
        "activeStreams": len(streams),
        "streams": streams,
        "memory": {
            "process": mib(reading.process_rss_bytes),
            "available": mib(reading.system_available_bytes),
            "models": [
                {"alias": m.alias, "size": mib(m.size_bytes), "leases": m.leases, "idleS": round(m.idle_s)}
                for m in loaded
            ],
        },
    }


async def overview(sources: ConsoleSources, sessions: StreamSessions) -> dict[str, Any]:
    database_ok, latency_ms = False, None
    if sources.database_ping is not None:
        started = time.perf_counter()
        try:
            await sources.database_ping()
            database_ok, latency_ms = True, round((time.perf_counter() - started) * 1000, 1)
        except Exception:  # shown as down; readiness reports the details
            database_ok = False
    url = sources.settings.effective_database_url
    errors = (
        await StreamSession.select(
            StreamSession.id, StreamSession.model, StreamSession.ended_at, StreamSession.error_message
        )
        .where(StreamSession.status == "ERROR")
        .order_by(StreamSession.ended_at, ascending=False)
        .limit(RECENT_ERRORS)
    )
    return {
        "version": service_version(),
        "database": {
            "kind": "PostgreSQL" if url.startswith("postgres") else "SQLite",
            "url": redacted_url(url),
            "ok": database_ok,
            "latencyMs": latency_ms,
        },
        "live": live_snapshot(sources, sessions),
        "errors": errors,
    }


def _short(value: object, limit: int = 28) -> str:
    """Long facts (digests, paths) keep their start and end, enough to tell two apart."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:14]}…{text[-8:]}"


def buckets_since(since: datetime, period: Period, now: datetime) -> list[datetime]:
    """Every hour or day from `since` to `now`: the time axis, with the periods nobody used left empty."""
    step = timedelta(hours=1) if period == "hour" else timedelta(days=1)
    moment, buckets = period_start(since, period), []
    while moment <= now:
        buckets.append(moment)
        moment += step
    return buckets


async def last_used_by_model() -> dict[str, datetime]:
    rows = await StreamSession.raw("SELECT model, MAX(started_at) AS last FROM stream_sessions GROUP BY model")
    return {row["model"]: _instant(row["last"]) for row in rows if row["last"] is not None}


def _instant(value: datetime | str) -> datetime:
    """An aggregate over a timestamp column comes back as text from SQLite (a datetime from PostgreSQL)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


async def models(catalog: ModelCatalog, sources: ConsoleSources) -> dict[str, Any]:
    listed = await catalog.models()
    last_used = await last_used_by_model()
    pool = sources.hf_pool
    in_memory = {m.alias: m for m in (pool.loaded() if pool is not None else [])}
    rows = []
    for model in listed:
        used = last_used.get(model.name) or last_used.get(model.native_name)
        facts = {k: _short(v) for k, v in model.metadata.items() if isinstance(v, str | int | float | bool)}
        memory = in_memory.get(model.native_name)
        rows.append(
            {
                "info": model,
                "default": model.name == sources.settings.hf_default_model
                or model.native_name == sources.settings.hf_default_model,
                "lastUsed": used,
                "memory": mib(memory.size_bytes) if memory else None,
                "facts": facts,
            }
        )
    return {"models": rows, "default": sources.settings.hf_default_model}


async def usage(usage_stats: UsageStats, period: Period) -> dict[str, Any]:
    now = datetime.now(UTC)
    since = now - DEFAULT_WINDOW[period]
    rows = await usage_stats.report(period=period, since=since)
    table = UsageTable.of(rows, buckets_since(since, period, now))
    charts = [{"metric": m, "svg": bar_chart(table, m, period)} for m in METRICS]
    lines = [
        {
            "bucket": bucket_label(r.period_start, period),
            "provider": r.provider,
            "model": r.model,
            "requests": r.requests,
            "errors": r.errors,
            "cancelled": r.cancelled,
            "prompt": r.prompt_tokens,
            "completion": r.completion_tokens,
            "ttft": round(r.average_time_to_first_token_ms, 1),
            "tps": round(r.completion_tokens / (r.total_duration_ms / 1000), 1) if r.total_duration_ms else None,
        }
        for r in rows
    ]
    return {"period": period, "charts": charts, "models": table.models, "rows": lines}


async def configuration(sources: ConsoleSources) -> dict[str, Any]:
    service = sources.config
    if service is None:
        return {"available": False}
    view = config_view(service)
    editable = [key for key in SETTING_KEYS if key not in RESTART_KEYS and not cm.is_secret(key)]
    return {
        "available": True,
        "view": view,
        "editable": editable,
        "revisions": await service.revisions(50),
    }
