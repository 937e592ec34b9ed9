"""How a generation ends: the reply saved once (complete, partial or failed), the event that tells the
client, and the usage record that counts it. One factory per thing: `reply_message`, `usage_record` (with
`completed_record`, `stopped_record` and `failed_record` for each ending), `reply_usage` for a completed
reply's figures; the stateless completion (`completions.py`) counts its generations with the same ones."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.db.tables import Conversation, Message
from app.errors import ErrorCode, ServiceError
from app.providers.routed import RoutedStream
from app.providers.types import ChatChunk
from app.services.chat_events import Completed, Failed, ReplyUsage, Terminated
from app.services.streams import COMPLETED, ERROR, TERMINATED, LiveSession, StreamSessions
from app.services.usage import UsageRecord

log = logging.getLogger(__name__)

UsageObserver = Callable[[UsageRecord], Awaitable[None] | None]


@dataclass
class Answer:
    """Who is answering a generation, and when it started and first spoke (perf_counter seconds).

    Until a model starts its reply it names the model asked for; `answered_by` then names the one that
    started (a fallback, with `fallback_from` the model asked for), so every saved reply and usage record
    is attributed to the model that produced it."""

    model: str
    provider: str
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    fallback_from: str | None = None
    #: whether a model started the reply (False while opening, and when none could)
    answered: bool = False

    def answered_by(self, stream: RoutedStream) -> None:
        self.model, self.provider, self.fallback_from = stream.model, stream.provider, stream.fallback_from
        self.answered = True

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def time_to_first_token_ms(self) -> float | None:
        return (self.first_token_at - self.started) * 1000 if self.first_token_at else None


def usage_record(
    answer: Answer,
    status: str,
    *,
    completion_tokens: int,
    prompt_tokens: int = 0,
    time_to_first_token_ms: float | None = None,
    duration_ms: float | None = None,
    error_code: str | None = None,
) -> UsageRecord:
    """The one way a finished generation becomes a usage record."""
    provider = (answer.provider or "unknown") if status == "failed" else answer.provider
    return UsageRecord(
        provider=provider,
        model=answer.model,
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        time_to_first_token_ms=time_to_first_token_ms,
        duration_ms=answer.elapsed_ms() if duration_ms is None else duration_ms,
        error_code=error_code,
        answered=answer.answered,
    )


def reply_usage(final: ChatChunk, answer: Answer, token_count: int) -> ReplyUsage:
    """A completed reply's figures: the provider's where it gave them, else what the service counted and timed."""
    usage = final.usage
    return ReplyUsage(
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=(usage.completion_tokens if usage else None) or token_count,
        duration_ms=(usage.duration_ms if usage and usage.duration_ms else None) or answer.elapsed_ms(),
        time_to_first_token_ms=(usage.time_to_first_token_ms if usage else None) or answer.time_to_first_token_ms(),
    )


def completed_record(answer: Answer, usage: ReplyUsage) -> UsageRecord:
    return usage_record(
        answer,
        "complete",
        prompt_tokens=usage.prompt_tokens or 0,
        completion_tokens=usage.completion_tokens or 0,
        time_to_first_token_ms=usage.time_to_first_token_ms,
        duration_ms=usage.duration_ms or 0.0,
    )


def stopped_record(answer: Answer, token_count: int, *, timed_out: bool) -> UsageRecord:
    """A generation stopped before its end: by its deadline, or by whoever asked for it."""
    return usage_record(
        answer,
        "partial",
        completion_tokens=token_count,
        time_to_first_token_ms=answer.time_to_first_token_ms(),
        error_code="TIMEOUT" if timed_out else "CANCELLED",
    )


def failed_record(answer: Answer, token_count: int, error: ServiceError) -> UsageRecord:
    return usage_record(answer, "failed", completion_tokens=token_count, error_code=str(error.code))


async def notify(observers: Sequence[UsageObserver], record: UsageRecord) -> None:
    """Tell every observer of a finished generation; a failure to record is logged, never raised."""
    for observer in observers:
        try:
            result = observer(record)
            if result is not None:
                await result
        except Exception:
            log.exception("recording the usage of a generation failed")


def reply_message(
    conversation: Conversation, session: LiveSession, answer: Answer, status: str, finish: str
) -> Message:
    """The reply row: the text so far, attributed to the model that produced it (and, for a fallback, the
    model asked for)."""
    now = datetime.now(UTC)
    return Message(
        conversation_id=conversation.id,
        text=session.text,
        sender="llm",
        timestamp=now,
        created_at=now,
        provider=answer.provider or None,
        model=answer.model,
        fallback_from=answer.fallback_from,
        status=status,
        completion_tokens=session.token_count,
        finish_reason=finish,
    )


class Outcomes:
    """Saves how each generation ended and tells the usage observers; a failure to record is logged."""

    def __init__(self, sessions: StreamSessions) -> None:
        self.sessions = sessions
        #: called with every finished generation (usage statistics, metrics); failures are logged, never raised
        self.observers: list[UsageObserver] = []

    async def completed(
        self, session: LiveSession, conversation: Conversation, stream: RoutedStream, answer: Answer, final: ChatChunk
    ) -> tuple[Completed, UsageRecord]:
        if not session.text.strip():
            raise ServiceError(
                ErrorCode.GENERATION_FAILED, "The model returned an empty reply", details={"model": answer.model}
            )
        usage = reply_usage(final, answer, session.token_count)
        reply = reply_message(conversation, session, answer, "complete", final.finish_reason or "stop")
        reply.prompt_tokens = usage.prompt_tokens
        reply.completion_tokens = usage.completion_tokens
        reply.duration_ms = usage.duration_ms
        reply.time_to_first_token_ms = usage.time_to_first_token_ms
        try:
            saved = await self.sessions.close(session, status=COMPLETED, reply=reply)
        except Exception as exc:
            log.exception("saving the reply of session %s failed", session.id)
            raise ServiceError(
                ErrorCode.INTERNAL_ERROR, "The reply could not be saved", details={"model": answer.model}
            ) from exc
        completed = Completed(
            session_id=session.id,
            message_id=saved or reply.id,
            text=session.text,
            model=answer.model,
            provider=answer.provider,
            usage=usage,
            finish_reason=reply.finish_reason or "stop",
            fallback_from=stream.fallback_from,
        )
        return completed, completed_record(answer, usage)

    async def stopped(
        self, session: LiveSession, conversation: Conversation, answer: Answer
    ) -> tuple[Terminated, UsageRecord]:
        """A partial reply: stopped by the user, the deadline or a shutdown."""
        reason = session.reason or "USER_REQUESTED"
        timed_out = reason == "TIMEOUT"
        reply = (
            reply_message(conversation, session, answer, "partial", "timeout" if timed_out else "cancelled")
            if session.text.strip()
            else None
        )
        saved = await self._close_recording_failure(session, status=TERMINATED, reason=reason, reply=reply)
        record = stopped_record(answer, session.token_count, timed_out=timed_out)
        return Terminated(session.id, session.text, session.token_count, reason, saved), record

    async def failed(
        self, session: LiveSession, conversation: Conversation, answer: Answer, error: ServiceError
    ) -> tuple[Failed, UsageRecord]:
        reply = reply_message(conversation, session, answer, "failed", "error") if session.text.strip() else None
        await self._close_recording_failure(session, status=ERROR, reason="ERROR", error=error.message, reply=reply)
        record = failed_record(answer, session.token_count, error)
        return Failed(str(error.code), error.message, error.details), record

    async def notify(self, record: UsageRecord) -> None:
        await notify(self.observers, record)

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
