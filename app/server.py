"""Running the app under uvicorn, with a shutdown that ends open streams cleanly.

uvicorn waits for open connections before it shuts the app down, and an event stream stays open
until its reply ends. On SIGINT/SIGTERM we therefore stop every generation first: each saves its
partial reply and sends `terminated` (reason SERVER_SHUTDOWN), its connection closes, and uvicorn's
graceful shutdown proceeds. The timeout is a backstop for clients that never read.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType
from typing import Any

import uvicorn
from litestar import Litestar

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self.litestar = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        chat = getattr(self.litestar.state, "chat", None)
        if chat is not None and self.loop is not None and not self.should_exit:
            log.info("shutting down: stopping open streams")
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(chat.sessions.stop_all("SERVER_SHUTDOWN")))
        super().handle_exit(sig, frame)


def run(app: Litestar, *, host: str, port: int, log_level: str, ssl: dict[str, str]) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        log_config=None,  # logging is ours (app/logging_setup.py): one format, ids, redaction
        timeout_graceful_shutdown=10,
        **ssl,  # type: ignore[arg-type]
    )
    _Server(config, app).run()
