"""The chat turn: one service behind GraphQL `addMessage`, SSE `/api/stream-message` and REST.

Order of a turn: authorize -> validate uploads -> save the user message (and images) FIRST ->
route images to a vision model -> build the context -> open a stream session -> generate in a
server-side task -> save the reply (complete, partial or failed) exactly once.

The generation runs in its own task, so a client that disconnects does not lose the reply; the
request that started it only listens. Stopping is explicit (terminate), by timeout, or, when
`stream_cancel_on_disconnect` is set, by the listener going away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import msgspec

from app.db.tables import Conversation, Message
from app.db.text import storable, without_nul
from app.errors import ErrorCode, ServiceError
from app.logging_setup import stream_session_id
from app.providers.registry import RequestFor
from app.providers.routed import RoutedStream
from app.providers.types import ChatChunk, ChatMessage, ChatRequest, GenerationOptions, ModelInfo
from app.services.chat_events import (
    FINAL_EVENTS,
    Completed,
    Failed,
    ImagesProcessed,
    SessionStarted,
    Terminated,
    Token,
    TurnEvent,
    UserMessageSaved,
)
from app.services.context import build_context
from app.services.conversations import ConversationService
from app.services.images import ImageStore, Upload
from app.services.model_settings import ModelSettingsSource, NoModelSettings
from app.services.prompts import DEFAULT_SYSTEM_PROMPT
from app.services.streams import COMPLETED, ERROR, TERMINATED, LiveSession, StreamSessions
from app.services.usage import UsageRecord
from app.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class Router(Protocol):
    async def open_chat_stream(self, model_name: str, request_for: RequestFor) -> RoutedStream: ...
    async def token_counter(self, model_name: str) -> Callable[[str], int] | None: ...


class Catalog(Protocol):
    async def find(self, name: str) -> ModelInfo | None: ...


class _Stopped(Exception):
    """The session was cancelled or timed out while waiting on the model."""


#: how long a stopped generation waits for its listener to take the tokens already sent to it
DELIVERY_WAIT_S = 2.0


class _Listener:
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


@dataclass(frozen=True)
class TurnRequest:
    conversation_id: str
    text: str
    model: str | None = None
    password: str | None = None
    uploads: tuple[Upload, ...] = ()


class ChatService:
    def __init__(
        self,
        settings: Settings,
        conversations: ConversationService,
        sessions: StreamSessions,
        images: ImageStore,
        router: Router | None,
        catalog: Catalog | None,
    ) -> None:
        self.settings = settings
        self.conversations = conversations
        self.sessions = sessions
        self.images = images
        self.router = router
        self.catalog = catalog
        self._tasks: set[asyncio.Task[None]] = set()
        #: per-model settings (the configuration service replaces this); read once per turn
        self.model_settings: ModelSettingsSource = NoModelSettings()
        #: called with every finished generation (usage statistics, metrics); failures are logged, never raised
        self.observers: list[Callable[[UsageRecord], Awaitable[None] | None]] = []

    async def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        """Run one turn and yield its events; raises ServiceError for refusals before anything is saved.

        What is refused before the user's message is saved, and what keeps it: a refusal that is certain
        and cheap to know here (a bad request, a model disabled in the configuration, a message that does
        not fit the model's context) is raised before anything is stored, so a message the model can never
        take does not fill the database. Whatever can only be learned from the provider (it is down, busy,
        does not know the model, fails midway) comes after the message is saved: the user's words are kept
        and the turn ends with an error event.
        """
        conversation = await self.conversations.authorize(request.conversation_id, request.password)
        validated = self.images.validate(request.uploads)
        chosen = (request.model or conversation.llm_model).strip()
        if not chosen:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "A model name is required", details={"field": "model"})
        if not storable(chosen):  # it is stored on the conversation and the reply
            raise ServiceError(ErrorCode.INVALID_REQUEST, "model contains a NUL character", details={"field": "model"})
        self.conversations.check_message_text(request.text)
        chosen_info = await self._find(chosen)
        model_name, info, warnings = chosen, chosen_info, []
        images_b64: list[str] = []
        if validated:
            model_name, info, warnings = await self._route_images(chosen, chosen_info)
            if not warnings:
                images_b64 = self.images.as_base64(validated)
        history = await self.conversations.list_messages(conversation.id)
        current = ChatMessage(role="user", content=request.text, images=images_b64)
        # Built before the message is saved: a message too long for the model is refused with nothing stored.
        chat_request = await self._request_for(model_name, info, history, current)

        user_message = await self.conversations.add_message(
            conversation, text=request.text, sender="user", has_images=bool(validated)
        )
        yield UserMessageSaved(user_message.id)
        # The conversation keeps the model the user chose, even when images go to a vision fallback.
        await self.conversations.set_model(conversation, chosen, chosen_info.provider if chosen_info else None)
        if validated:
            stored = await self.images.store(conversation.id, user_message.id, validated)
            yield ImagesProcessed(len(stored), warnings, [self.images.describe(row) for row in stored])

        async def request_for(candidate: str) -> ChatRequest:
            """The requested model's request, or a fallback's own (its context, settings and reply budget)."""
            if candidate == model_name:
                return chat_request
            return await self._request_for(candidate, await self._find(candidate), history, current)

        session = await self.sessions.open(
            conversation_id=conversation.id,
            model=model_name,
            provider=info.provider if info else None,
            user_message_id=user_message.id,
        )
        listener = _Listener()
        task = asyncio.create_task(self._generate(session, conversation, model_name, request_for, listener))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        yield SessionStarted(session.id, model_name, info.provider if info else "")
        finished = False
        try:
            while True:
                event = await listener.events.get()
                yield event
                listener.events.task_done()  # resumed: the event was handed on
                if isinstance(event, FINAL_EVENTS):
                    finished = True
                    return
        finally:
            listener.gone.set()
            if not finished and self.settings.stream_cancel_on_disconnect:
                session.stop("USER_REQUESTED")

    async def _find(self, name: str) -> ModelInfo | None:
        return await self.catalog.find(name) if self.catalog is not None else None

    async def _request_for(
        self, model_name: str, info: ModelInfo | None, history: list[Message], current: ChatMessage
    ) -> ChatRequest:
        """What `model_name` is sent: its configured settings, and the history that fits its own context.

        Raises MODEL_NOT_FOUND when the model is disabled in the configuration and CONTEXT_LENGTH_EXCEEDED
        when the system prompt and the current message alone do not fit.
        """
        configured = self.model_settings.for_model(model_name, info)
        if not configured.enabled:
            raise ServiceError(
                ErrorCode.MODEL_NOT_FOUND,
                f"Model {model_name} is disabled in the configuration",
                details={"model": model_name, "reason": "disabled"},
            )
        options = configured.options or GenerationOptions()
        context_length = (info.context_length if info else None) or self.settings.chat_context_length
        if configured.context_budget:
            context_length = min(context_length, configured.context_budget)
        max_tokens = min(options.max_tokens or self.settings.chat_max_tokens, context_length // 2)
        context = build_context(
            system_prompt=configured.system_prompt or self.settings.system_prompt or DEFAULT_SYSTEM_PROMPT,
            history=[m for m in history if m.text],
            current=current,
            context_length=context_length,
            max_new_tokens=max_tokens,
            count_text=await self.router.token_counter(model_name) if self.router is not None else None,
        )
        return ChatRequest(
            model=model_name,
            messages=context.messages,
            options=msgspec.structs.replace(options, max_tokens=max_tokens, context_length=context_length),
            timeout_s=self.settings.stream_timeout_s,
            keep_alive_s=configured.keep_alive_s,
        )

    async def _open(self, model_name: str, request_for: RequestFor) -> RoutedStream:
        if self.router is None:
            raise ServiceError(ErrorCode.PROVIDER_UNAVAILABLE, "No model provider is configured")
        return await self.router.open_chat_stream(model_name, request_for)

    async def _route_images(self, model_name: str, info: ModelInfo | None) -> tuple[str, ModelInfo | None, list[str]]:
        """Images go to a vision model: the chosen one, else the configured fallback, else text only."""
        if info is not None and info.capabilities.vision:
            return model_name, info, []
        fallback = self.settings.vision_fallback_model
        if fallback:
            fallback_info = await self._find(fallback)
            if fallback_info is not None and fallback_info.capabilities.vision:
                return fallback, fallback_info, []
        return model_name, info, [f"Model {model_name} cannot see images; the images were saved but not sent to it."]

    # -- the generation task -------------------------------------------------------------------------

    async def _generate(
        self,
        session: LiveSession,
        conversation: Conversation,
        model_name: str,
        request_for: RequestFor,
        listener: _Listener,
    ) -> None:
        events = listener.events
        stream_session_id.set(session.id)  # this task's log lines carry the session id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.stream_timeout_s
        started = time.perf_counter()
        first_token_at: float | None = None
        stream: RoutedStream | None = None
        answered_by, provider = model_name, session.provider or ""
        outcome = UsageRecord(provider="", model=model_name, status="failed")
        final: TurnEvent | None = None
        # one waiter on the session's cancel event for the whole generation, not one per chunk
        stopped = asyncio.ensure_future(session.cancel.wait())
        try:
            stream = await self._until_stopped(self._open(model_name, request_for), session, stopped, deadline)
            answered_by, provider = stream.model, stream.provider
            while True:
                try:
                    chunk = await self._until_stopped(anext(stream), session, stopped, deadline)
                except StopAsyncIteration:
                    raise ServiceError(
                        ErrorCode.GENERATION_FAILED, "The model stream ended without a final chunk"
                    ) from None
                text = without_nul(chunk.text)
                if text:
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                    session.parts.append(text)
                    session.token_count += 1
                    events.put_nowait(Token(text))
                    await self.sessions.flush_if_due(session)
                if chunk.done and chunk.finish_reason in ("timeout", "cancelled"):
                    # The provider stopped on its own deadline (or was cancelled): a partial reply.
                    session.stop("TIMEOUT" if chunk.finish_reason == "timeout" else "USER_REQUESTED")
                    raise _Stopped
                if chunk.done:
                    final, outcome = await self._complete(session, conversation, stream, chunk, started, first_token_at)
                    return
        except _Stopped:
            reason = session.reason or "USER_REQUESTED"
            # Every token is out before the end is recorded: a terminate answered from the saved row
            # (here or on another replica) is then the last word, and no token follows it.
            await listener.delivered(DELIVERY_WAIT_S)
            saved = await self._close_recording_failure(
                session,
                status=TERMINATED,
                reason=reason,
                reply=self._reply(
                    conversation,
                    session,
                    answered_by,
                    provider,
                    "partial",
                    "timeout" if reason == "TIMEOUT" else "cancelled",
                )
                if session.text.strip()
                else None,
            )
            final = Terminated(session.id, session.text, session.token_count, reason, saved)
            outcome = UsageRecord(
                provider=provider,
                model=answered_by,
                status="partial",
                completion_tokens=session.token_count,
                time_to_first_token_ms=(first_token_at - started) * 1000 if first_token_at else None,
                duration_ms=(time.perf_counter() - started) * 1000,
                error_code="TIMEOUT" if reason == "TIMEOUT" else "CANCELLED",
            )
        except Exception as exc:
            error = exc if isinstance(exc, ServiceError) else None
            if error is None:
                log.error("generation failed for session %s", session.id, exc_info=exc)
                error = ServiceError(ErrorCode.GENERATION_FAILED, "The model failed while generating the reply")
            await self._close_recording_failure(
                session,
                status=ERROR,
                reason="ERROR",
                error=error.message,
                reply=self._reply(conversation, session, answered_by, provider, "failed", "error")
                if session.text.strip()
                else None,
            )
            final = Failed(str(error.code), error.message, error.details)
            outcome = UsageRecord(
                provider=provider or "unknown",
                model=answered_by,
                status="failed",
                completion_tokens=session.token_count,
                duration_ms=(time.perf_counter() - started) * 1000,
                error_code=str(error.code),
            )
        finally:
            stopped.cancel()
            if stream is not None:
                with suppress(Exception):
                    await stream.aclose()
            # Usage is recorded before the client hears the end, so a report read after it includes it.
            await self._notify(outcome)
            if final is not None:
                events.put_nowait(final)

    async def _close_recording_failure(
        self, session: LiveSession, *, status: str, reason: str, reply: Message | None, error: str | None = None
    ) -> int | None:
        """`sessions.close` for a reply that did not complete: a database that cannot record it is logged,
        never raised, so the listener still hears how the turn ended (it would otherwise wait forever)."""
        try:
            return await self.sessions.close(session, status=status, reason=reason, error=error, reply=reply)
        except Exception:
            log.exception("recording the end of session %s (%s) failed", session.id, status)
            return None

    async def _notify(self, record: UsageRecord) -> None:
        for observer in self.observers:
            try:
                result = observer(record)
                if result is not None:
                    await result
            except Exception:
                log.exception("recording the usage of a generation failed")

    async def _complete(
        self,
        session: LiveSession,
        conversation: Conversation,
        stream: RoutedStream,
        final: ChatChunk,
        started: float,
        first_token_at: float | None,
    ) -> tuple[Completed, UsageRecord]:
        model, provider = stream.model, stream.provider
        if not session.text.strip():
            raise ServiceError(
                ErrorCode.GENERATION_FAILED, "The model returned an empty reply", details={"model": model}
            )
        usage = final.usage
        reply = self._reply(conversation, session, model, provider, "complete", final.finish_reason or "stop")
        reply.prompt_tokens = usage.prompt_tokens if usage else None
        reply.completion_tokens = (usage.completion_tokens if usage else None) or session.token_count
        reply.duration_ms = (usage.duration_ms if usage and usage.duration_ms else None) or (
            time.perf_counter() - started
        ) * 1000
        reply.time_to_first_token_ms = (usage.time_to_first_token_ms if usage else None) or (
            (first_token_at - started) * 1000 if first_token_at else None
        )
        try:
            saved = await self.sessions.close(session, status=COMPLETED, reply=reply)
        except Exception as exc:
            log.exception("saving the reply of session %s failed", session.id)
            raise ServiceError(
                ErrorCode.INTERNAL_ERROR, "The reply could not be saved", details={"model": model}
            ) from exc
        completed = Completed(
            session_id=session.id,
            message_id=saved or reply.id,
            text=session.text,
            model=model,
            provider=provider,
            usage={
                "promptTokens": reply.prompt_tokens,
                "completionTokens": reply.completion_tokens,
                "timeToFirstTokenMs": reply.time_to_first_token_ms,
                "durationMs": reply.duration_ms,
            },
            finish_reason=reply.finish_reason or "stop",
            fallback_from=stream.fallback_from,
        )
        return completed, UsageRecord(
            provider=provider,
            model=model,
            status="complete",
            prompt_tokens=reply.prompt_tokens or 0,
            completion_tokens=reply.completion_tokens or 0,
            time_to_first_token_ms=reply.time_to_first_token_ms,
            duration_ms=reply.duration_ms or 0.0,
        )

    @staticmethod
    def _reply(
        conversation: Conversation, session: LiveSession, model: str, provider: str, status: str, finish: str
    ) -> Message:
        now = datetime.now(UTC)
        return Message(
            conversation_id=conversation.id,
            text=session.text,
            sender="llm",
            timestamp=now,
            created_at=now,
            provider=provider or None,
            model=model,
            status=status,
            completion_tokens=session.token_count,
            finish_reason=finish,
        )

    @staticmethod
    async def _until_stopped(
        awaitable: Awaitable[T], session: LiveSession, stopped: asyncio.Future[object], deadline: float
    ) -> T:
        """Await `awaitable` unless the session is cancelled (`stopped`, its cancel event's waiter) or its
        deadline passes first (then raise _Stopped)."""
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
        raise _Stopped

    async def shutdown(self) -> None:
        """Stop every generation and let each save its partial reply."""
        await self.sessions.stop_all("SERVER_SHUTDOWN")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)


@dataclass(frozen=True)
class TurnOutcome:
    user_message_id: int
    reply_message_id: int | None
    model: str
    error: Failed | None
    response_time_ms: float


async def run_to_completion(chat: ChatService, request: TurnRequest) -> TurnOutcome:
    """The non-streaming turn (GraphQL addMessage): the same turn, its events collected."""
    started = time.perf_counter()
    user_message_id = 0
    model = request.model or ""
    reply: int | None = None
    error: Failed | None = None
    try:
        async for event in chat.turn(request):
            if isinstance(event, UserMessageSaved):
                user_message_id = event.message_id
            elif isinstance(event, SessionStarted):
                model = event.model
            elif isinstance(event, Completed):
                reply, model = event.message_id, event.model
            elif isinstance(event, Terminated):
                reply = event.message_id
            elif isinstance(event, Failed):
                error = event
    except ServiceError as exc:
        if not user_message_id:
            raise
        error = Failed(str(exc.code), exc.message, exc.details)
    return TurnOutcome(user_message_id, reply, model, error, (time.perf_counter() - started) * 1000)


async def saved_messages(outcome: TurnOutcome) -> tuple[Message, Message | None]:
    """A finished turn's stored user message and reply (None when there is none), read in one query."""
    ids = [outcome.user_message_id, *([outcome.reply_message_id] if outcome.reply_message_id else [])]
    rows = {row.id: row for row in await Message.objects().where(Message.id.is_in(ids))}
    return rows[outcome.user_message_id], rows.get(outcome.reply_message_id) if outcome.reply_message_id else None
