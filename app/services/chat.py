"""The chat turn: one service behind GraphQL `addMessage`, SSE `/api/stream-message` and REST.

Order of a turn: authorize -> validate uploads -> route the model once (the requested one and its
fallbacks) -> route images to a vision model -> build each candidate's request -> save the user message
(and images) -> open a stream session -> generate in a server-side task (`generation.py`) -> save the
reply (complete, partial or failed) exactly once (`outcome.py`).

Stopping is explicit (terminate), by the turn's one deadline (`stream_timeout_s`), or, when
`stream_cancel_on_disconnect` is set, by the listener going away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.config.settings import Settings
from app.config.snapshot import ConfigSource
from app.db.tables import Message
from app.errors import ErrorCode, ServiceError
from app.providers.registry import Candidate
from app.providers.routed import RoutedStream
from app.providers.types import ChatMessage, GenerationOptions
from app.services.chat_events import (
    FINAL_EVENTS,
    Completed,
    Failed,
    ImagesProcessed,
    SessionStarted,
    Terminated,
    TurnEvent,
    UserMessageSaved,
)
from app.services.context import as_history
from app.services.conversations import ConversationService
from app.services.generation import Listener, generate
from app.services.images import ImageStore, Upload
from app.services.outcome import Answer, Outcomes
from app.services.streams import StreamSessions
from app.services.turn_request import TurnRequests
from app.services.vision import sees_images, vision_candidates


class Router(Protocol):
    async def candidates(self, model_name: str) -> list[Candidate]: ...
    async def open_chat_stream(self, candidates: Sequence[Candidate]) -> RoutedStream: ...


@dataclass(frozen=True)
class TurnRequest:
    conversation_id: str
    text: str
    model: str | None = None
    password: str | None = None
    uploads: tuple[Upload, ...] = ()
    #: this request's own generation options, over the model's configured ones
    options: GenerationOptions | None = None


class ChatService:
    def __init__(
        self,
        config: ConfigSource,
        conversations: ConversationService,
        sessions: StreamSessions,
        images: ImageStore,
        router: Router | None,
    ) -> None:
        self.config = config
        self.conversations = conversations
        self.sessions = sessions
        self.images = images
        self.router = router
        self.requests = TurnRequests(config)
        #: saves how each generation ended; its observers hear every finished generation's usage
        self.outcomes = Outcomes(sessions)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def settings(self) -> Settings:
        """The published settings (a change applies to what reads them next)."""
        return self.config.settings

    async def turn(self, request: TurnRequest) -> AsyncIterator[TurnEvent]:
        """Run one turn and yield its events; raises ServiceError for refusals before anything is saved.

        What is refused before the user's message is saved, and what keeps it: a refusal that is certain
        and cheap to know here (a bad request, a model that does not route or is disabled in the
        configuration, a message that does not fit the model's context) is raised before anything is
        stored, so a message the model can never take does not fill the database. Whatever can only be
        learned from the provider (it is down, busy, does not know the model, fails midway) comes after
        the message is saved: the user's words are kept and the turn ends with an error event.
        """
        conversation = await self.conversations.authorize(request.conversation_id, request.password)
        validated = self.images.validate(request.uploads)
        chosen = (request.model or conversation.llm_model).strip()
        if not chosen:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "A model name is required", details={"field": "model"})
        self.conversations.check_message_text(request.text)
        router = self.router
        if router is None:
            raise ServiceError(ErrorCode.PROVIDER_UNAVAILABLE, "No model provider is configured")
        routed = await router.candidates(chosen)
        chosen_info = routed[0].info
        warnings: list[str] = []
        images_b64: list[str] = []
        if validated:
            # Images go to a vision model: the chosen one, else the configured fallback, else text only.
            vision = await vision_candidates(routed, self.settings.vision_fallback_model, router.candidates)
            if vision is None:
                warnings = [f"Model {routed[0].asked} cannot see images; the images were saved but not sent to it."]
            else:
                routed, images_b64 = vision, self.images.as_base64(validated)
        earlier = await self.conversations.list_messages(conversation.id)
        current = ChatMessage(role="user", content=request.text, images=images_b64)
        # earlier turns' images, for the vision models among the candidates (each keeps what fits its context)
        seeing = any(sees_images(c) for c in routed)
        history = as_history(earlier, await self.images.history_base64(earlier) if seeing else None)
        # Built before the message is saved: a message too long for the model is refused with nothing stored.
        candidates = self.requests.for_candidates(routed, history, current, request.options)
        first = candidates[0]
        model_name, provider = first.asked, first.info.provider if first.info else ""

        user_message = await self.conversations.add_message(
            conversation, text=request.text, sender="user", has_images=bool(validated)
        )
        yield UserMessageSaved(user_message.id)
        # The conversation keeps the model the user chose, even when images go to a vision fallback.
        await self.conversations.set_model(conversation, chosen, chosen_info.provider if chosen_info else None)
        if validated:
            stored = await self.images.store(conversation.id, user_message.id, validated)
            yield ImagesProcessed(len(stored), warnings, [self.images.describe(row) for row in stored])

        session = await self.sessions.open(
            conversation_id=conversation.id,
            model=model_name,
            provider=provider or None,
            user_message_id=user_message.id,
        )
        listener = Listener()
        task = asyncio.create_task(
            generate(
                sessions=self.sessions,
                outcomes=self.outcomes,
                session=session,
                conversation=conversation,
                answer=Answer(model_name, provider),
                open_stream=lambda: router.open_chat_stream(candidates),
                timeout_s=self.settings.stream_timeout_s,
                listener=listener,
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        yield SessionStarted(session.id, model_name, provider)
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
