"""Process-wide logging: text or JSON lines, request and stream-session ids on every record, secrets masked.

Log records never carry passwords, tokens or message bodies: the code does not log them, and a
redaction filter masks anything shaped like a credential that slips into a message anyway (a
database URL's password, a bearer token, `password=...`), as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

from litestar.types import ASGIApp, Message, Receive, Scope, Send

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
stream_session_id: ContextVar[str | None] = ContextVar("stream_session_id", default=None)

access_log = logging.getLogger("beth-chat.access")

_SECRETS = (
    (re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"), r"\1[redacted]"),
    (
        re.compile(r"(?i)((?:password|passwd|token|secret|api[_-]?key)[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&}]+"),
        r"\1[redacted]",
    ),
    (re.compile(r"(://[^:/@\s]+:)[^@/\s]+@"), r"\1[redacted]@"),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class ContextFilter(logging.Filter):
    """Adds the request id and stream session id of the current task, and masks secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.session_id = stream_session_id.get()
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "session_id"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        for key in ("method", "route", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{k}={v}" for k in ("request_id", "session_id") if (v := getattr(record, k, None))]
        line = f"{line} [{' '.join(ids)}]" if ids else line
        return redact(line) if record.exc_info else line


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Piccolo announces the SQLite version on every connection; httpx logs every request it makes.
    logging.getLogger("piccolo").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Database drivers log statements with their parameters (message bodies, hashes) at debug level.
    for driver in ("aiosqlite", "asyncpg", "httpcore"):
        logging.getLogger(driver).setLevel(logging.WARNING)


def request_context(app: ASGIApp) -> ASGIApp:
    """Give every HTTP request an id (the client's `X-Request-ID` when sane), echo it, and log one access line.

    The access line names the route template, never the raw path or query (they can hold ids or secrets).
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        rid = given if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", given) else uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            route = scope.get("path_template") or "unmatched"
            access_log.info(
                "%s %s %s %.1fms",
                scope.get("method"),
                route,
                status["code"],
                (time.perf_counter() - started) * 1000,
                extra={
                    "method": scope.get("method"),
                    "route": str(route),
                    "status": status["code"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            request_id.reset(token)

    return wrapped
