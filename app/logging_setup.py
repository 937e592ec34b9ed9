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
from typing import Any

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


#: every character some reader ends a line at (`str.splitlines` splits at all of them), as visible escapes
_LINE_BREAKS = str.maketrans(
    {
        char: f"\\u{ord(char):04x}" if ord(char) > 0xFF else repr(char)[1:-1]
        for char in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    }
)


def one_line(text: str) -> str:
    """`text` with its line breaks escaped: client text in a log record can never start a line of its own."""
    return text.translate(_LINE_BREAKS)


def _indented(text: str) -> str:
    """A traceback keeps its lines, each indented, so none of them (an exception's message can quote client
    text) can pass for a record of its own."""
    return "\n".join(f"    {line}" for line in text.splitlines())


def mask_secrets_in_text(text: str) -> str:
    """Bearer tokens, passwords, keys and URL credentials in a log line become `[redacted]`."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class ContextFilter(logging.Filter):
    """Adds the request id and stream session id of the current task, and masks secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.session_id = stream_session_id.get()
        message = record.getMessage()
        cleaned = mask_secrets_in_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_JSON_LINE_BREAKS = str.maketrans({char: f"\\u{ord(char):04x}" for char in "\x85\u2028\u2029"})


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
            entry["error"] = mask_secrets_in_text(self.formatException(record.exc_info))
        # json escapes the other line breaks; these three it leaves as they are when not escaping to ASCII
        return json.dumps(entry, ensure_ascii=False).translate(_JSON_LINE_BREAKS)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{k}={one_line(str(v))}" for k in ("request_id", "session_id") if (v := getattr(record, k, None))]
        line = f"{line} [{' '.join(ids)}]" if ids else line
        return mask_secrets_in_text(line) if record.exc_info else line


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
