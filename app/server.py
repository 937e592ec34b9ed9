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
from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger(__name__)

#: seconds uvicorn waits for open connections to finish after SIGTERM before cancelling them
GRACEFUL_SHUTDOWN_S = 10


class _ReadDeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol, with a limit on how slowly a client may send its request.

    uvicorn waits for a request head and body forever, so idle or trickling connections pile up
    until file descriptors run out. Here the head must arrive whole within `read_timeout_s` of its
    first byte (or of the connection), and the body may not pause longer than that between chunks.
    A connection that misses either is closed. Reading paused by our own flow control does not count.
    """

    read_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_phase: str | None = None
        self._watch_reading()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _reading_phase(self) -> str | None:
        """Which part of a request is due from the client: its head, its body, or nothing (None)."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return "head"
        if not cycle.more_body or self.flow.read_paused:
            return None
        if getattr(cycle, "expect_100_continue", False) or getattr(cycle, "waiting_for_100_continue", False):
            return None  # the client waits for our "100 Continue" before it sends the body
        return "body"

    def _watch_reading(self) -> None:
        phase = self._reading_phase()
        if phase is None:
            self._cancel_deadline()
        elif phase == "body" or phase != self._deadline_phase or self._deadline is None:
            # a head has one deadline from its first byte; a body's restarts with every chunk
            self._cancel_deadline()
            self._deadline_phase = phase
            self._deadline = self.loop.call_later(self.read_timeout_s, self._on_deadline)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._deadline_phase = None, None

    def _on_deadline(self) -> None:
        phase = self._reading_phase()
        self._deadline, self._deadline_phase = None, None
        if phase is None or self.transport.is_closing():
            return
        log.info("closing a connection that sent its request %s too slowly", phase)
        self.transport.close()


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self.litestar = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        services = self.litestar.state.get("services")  # none until the app has started
        if services is not None and self.loop is not None and not self.should_exit:
            # streams that only wait for news (configuration events) end their responses; replies are stopped
            # and saved (both run in the loop, never inside this signal handler)
            self.loop.call_soon_threadsafe(services.shutdown.set)
            log.info("shutting down: stopping open streams")
            sessions = services.chat.sessions
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(sessions.stop_all("SERVER_SHUTDOWN")))
        super().handle_exit(sig, frame)


def run(
    app: Litestar, *, host: str, port: int, log_level: str, ssl: dict[str, str], read_timeout_s: float = 10.0
) -> None:
    protocol = type("ReadDeadlineProtocol", (_ReadDeadlineProtocol,), {"read_timeout_s": read_timeout_s})
    config = uvicorn.Config(
        app,
        http=protocol,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        log_config=None,  # logging is ours (app/logging_setup.py): one format, ids, redaction
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        **ssl,  # type: ignore[arg-type]
    )
    _Server(config, app).run()
