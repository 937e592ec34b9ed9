"""The generation task: opens the routed reply, relays its tokens to the listener, flushes the partial text,
and ends it by completion, stop (terminate, the turn's deadline, shutdown) or failure.

It runs in its own task, so a client that disconnects does not lose the reply; the request that started
it only listens. The turn has one deadline, counted from the start of this task: it covers opening
(retries and fallbacks included) and streaming, and providers are not sent a second one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TypeVar

from app.db.tables import Conversation
from app.db.text import without_nul
from app.errors import ErrorCode, ServiceError
from app.logging_setup import stream_session_id
from app.providers.routed import RoutedStream
from app.services.chat_events import Token, TurnEvent
from app.services.outcome import Answer, Outcomes, usage_record
from app.services.streams import LiveSession, StreamSessions

log = logging.getLogger(__name__)
T = TypeVar("T")

#: how long a stopped generation waits for its listener to take the tokens already sent to it
DELIVERY_WAIT_S = 2.0


class Stopped(Exception):
    """The session was cancelled or its deadline passed while waiting on the model."""


class Listener:
    """A turn's events on their way to the request that started it, and whether that request still reads."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[TurnEvent] = asyncio.Queue()
        self.gone = asyncio.Event()

    async def delivered(self, limit_s: float) -> None:
        """Until every event put so far was handed on, the listener left, or `limit_s` passed."""
        if self.gone.is_set():
            return
        waits = {asyncio.ensure_future(self.events.join()), asyncio.ensure_future(self.gone.wait())}
        try:
            await asyncio.wait(waits, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


async def generate(
    *,
    sessions: StreamSessions,
    outcomes: Outcomes,
    session: LiveSession,
    conversation: Conversation,
    answer: Answer,
    open_stream: Callable[[], Awaitable[RoutedStream]],
    timeout_s: float,
    listener: Listener,
) -> None:
    """Run one generation to its end; the final event (and the usage record, first) always goes out."""
    events = listener.events
    stream_session_id.set(session.id)  # this task's log lines carry the session id
    deadline = asyncio.get_running_loop().time() + timeout_s
    stream: RoutedStream | None = None
    record = usage_record(answer, "failed", completion_tokens=0)
    final: TurnEvent | None = None
    # one waiter on the session's cancel event for the whole generation, not one per chunk
    stopped = asyncio.ensure_future(session.cancel.wait())
    try:
        stream = await _until_stopped(open_stream(), session, stopped, deadline)
        answer.answered_by(stream)
        await sessions.answered_by(
            session, model=stream.model, provider=stream.provider, fallback_from=stream.fallback_from
        )
        while True:
            try:
                chunk = await _until_stopped(anext(stream), session, stopped, deadline)
            except StopAsyncIteration:
                raise ServiceError(
                    ErrorCode.GENERATION_FAILED, "The model stream ended without a final chunk"
                ) from None
            text = without_nul(chunk.text)
            if text:
                if answer.first_token_at is None:
                    answer.first_token_at = time.perf_counter()
                session.parts.append(text)
                session.token_count += 1
                events.put_nowait(Token(text))
                await sessions.flush_if_due(session)
            if chunk.done and chunk.finish_reason in ("timeout", "cancelled"):
                # The provider stopped on its own (or was cancelled): a partial reply.
                session.stop("TIMEOUT" if chunk.finish_reason == "timeout" else "USER_REQUESTED")
                raise Stopped
            if chunk.done:
                final, record = await outcomes.completed(session, conversation, stream, answer, chunk)
                return
    except Stopped:
        # Every token is out before the end is recorded: a terminate answered from the saved row
        # (here or on another replica) is then the last word, and no token follows it.
        await listener.delivered(DELIVERY_WAIT_S)
        final, record = await outcomes.stopped(session, conversation, answer)
    except Exception as exc:
        error = exc if isinstance(exc, ServiceError) else None
        if error is None:
            log.error("generation failed for session %s", session.id, exc_info=exc)
            error = ServiceError(ErrorCode.GENERATION_FAILED, "The model failed while generating the reply")
        final, record = await outcomes.failed(session, conversation, answer, error)
    finally:
        stopped.cancel()
        if stream is not None:
            with suppress(Exception):
                await stream.aclose()
        # Usage is recorded before the client hears the end, so a report read after it includes it.
        await outcomes.notify(record)
        if final is not None:
            events.put_nowait(final)


async def _until_stopped(
    awaitable: Awaitable[T], session: LiveSession, stopped: asyncio.Future[object], deadline: float
) -> T:
    """Await `awaitable` unless the session is cancelled (`stopped`, its cancel event's waiter) or the
    deadline passes first (then raise Stopped)."""
    work = asyncio.ensure_future(awaitable)
    if not session.cancel.is_set():
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        done, _ = await asyncio.wait({work, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        if not session.cancel.is_set():
            session.stop("TIMEOUT")
    work.cancel()
    with suppress(BaseException):
        await work
    raise Stopped
