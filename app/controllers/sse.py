"""Server-sent events framed exactly as the old web client parses them (docs/compatibility.md, "Streaming").

Each event is an optional `event: <name>` line, one `data: <single-line JSON>` line and a blank line,
`\\n` line endings only. Comment lines (`: keep-alive`) keep idle connections open; the client ignores them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import msgspec

from app.errors import ServiceError
from app.http_errors import unexpected_failure
from app.services.chat_events import (
    Completed,
    Failed,
    ImagesProcessed,
    SessionStarted,
    Terminated,
    Token,
    TurnEvent,
    UserMessageSaved,
)

KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "Connection": "keep-alive", "X-Accel-Buffering": "no"}
_DONE = object()

log = logging.getLogger(__name__)


def sse_event(name: str | None, payload: Any) -> bytes:
    """One event; msgspec escapes newlines inside strings, so the JSON stays on one line."""
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + msgspec.json.encode(payload) + b"\n\n"


async def with_keepalive(frames: AsyncIterator[bytes], interval_s: float = 15.0) -> AsyncIterator[bytes]:
    """Forward `frames`, adding a comment line whenever nothing was sent for `interval_s`.

    The source is pumped by its own task so waiting with a timeout never cancels it mid-step; when
    the client goes away, closing this generator cancels the pump (and so the source) cleanly.
    """
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for frame in frames:
                await queue.put(frame)
        except Exception as exc:  # delivered to the consumer, which decides what the client sees
            await queue.put(exc)
        finally:
            await queue.put(_DONE)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=interval_s)
            except TimeoutError:
                yield KEEPALIVE
                continue
            if item is _DONE:
                return
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]
    finally:
        task.cancel()
        # Awaited through a shield: the server cancels this consumer again and again as the client leaves, and
        # awaiting the pump itself would pass each cancellation on, interrupting the source's own cleanup
        # (closing a provider stream, recording usage). The pump is cancelled once, above.
        with suppress(BaseException):
            await asyncio.shield(task)


async def typed_events(events: AsyncIterator[TurnEvent]) -> AsyncIterator[bytes]:
    """The REST stream: every event named, payloads in camelCase; an error after the start is an event too."""
    try:
        async for event in events:
            name, payload = _typed(event)
            yield sse_event(name, payload)
    except Exception as exc:  # the stream has started: the client must hear how it ended
        error = exc if isinstance(exc, ServiceError) else unexpected_failure()
        if error is not exc:
            log.error("a typed event stream failed", exc_info=exc)
        yield sse_event("error", {"code": str(error.code), "message": error.message, "details": error.details})


def _typed(event: TurnEvent) -> tuple[str, dict[str, Any]]:
    match event:
        case UserMessageSaved(message_id):
            return "user_message", {"messageId": str(message_id)}
        case ImagesProcessed(processed, warnings, images):
            return "images", {"processed": processed, "warnings": warnings, "images": images}
        case SessionStarted(session_id, model, provider):
            return "session", {"sessionId": session_id, "model": model, "provider": provider}
        case Token(text):
            return "token", {"text": text}
        case Terminated(session_id, partial, count, reason, message_id):
            return "terminated", {
                "sessionId": session_id,
                "partialResponse": partial,
                "tokenCount": count,
                "reason": reason,
                "messageId": str(message_id) if message_id else None,
            }
        case Completed(session_id, message_id, text, model, provider, usage, finish_reason, fallback_from):
            return "end", {
                "sessionId": session_id,
                "messageId": str(message_id),
                "text": text,
                "model": model,
                "provider": provider,
                "usage": {
                    "promptTokens": usage.prompt_tokens,
                    "completionTokens": usage.completion_tokens,
                    "timeToFirstTokenMs": usage.time_to_first_token_ms,
                    "durationMs": usage.duration_ms,
                },
                "finishReason": finish_reason,
                "fallbackFrom": fallback_from,
            }
        case Failed(code, message, details):
            return "error", {"code": code, "message": message, "details": details}
    raise TypeError(f"unknown turn event {event!r}")
