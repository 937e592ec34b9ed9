"""Server-sent events framed exactly as the old web client parses them (contract sections 3 and 7).

Each event is an optional `event: <name>` line, one `data: <single-line JSON>` line and a blank line,
`\\n` line endings only. Comment lines (`: keep-alive`) keep idle connections open; the client ignores them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import msgspec

KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "Connection": "keep-alive", "X-Accel-Buffering": "no"}
_DONE = object()


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
        with suppress(BaseException):
            await task
