"""The server's shutdown signal, for responses that stay open until there is news.

On SIGTERM the server stops its replies itself (each ends with `terminated`). A stream that only waits
for news, such as the configuration events, would keep its connection open until uvicorn's grace period
runs out and cancels it; such streams watch this signal and end their response when it is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import suppress


class ShutdownSignal:
    """Set once, when the server begins to shut down."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


async def until_shutdown(items: AsyncGenerator[bytes, None], signal: ShutdownSignal) -> AsyncIterator[bytes]:
    """Forward `items` until they end or the server shuts down, whichever comes first."""
    stopping = asyncio.ensure_future(signal.wait())
    step: asyncio.Future[bytes] | None = None
    try:
        while not signal.is_set():
            step = asyncio.ensure_future(anext(items))
            await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            step = None
            yield item
    finally:
        for future in (step, stopping):
            if future is not None and not future.done():
                future.cancel()
                with suppress(asyncio.CancelledError, StopAsyncIteration):
                    await future
        await items.aclose()
