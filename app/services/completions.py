"""The stateless completion behind the OpenAI-compatible API: messages in, one routed reply out, nothing stored.

It reuses the chat turn's pieces: routing once with fallback before the first chunk (`Router`), images to a
vision model (`vision.py`), each candidate's request built with its settings, context window and reply budget
(`turn_request.py`), one deadline (`stream_timeout_s`) over opening and streaming, and the usage records of
`outcome.py`. Unlike the turn, no conversation, message, image or stream session is stored, and the generation
runs in the request itself: a client that goes away stops it, as the provider stream is closed at once.

What is counted in the usage statistics: every generation that was opened (complete; partial when the
client went away or the deadline passed; failed), and every attempt whose models could not start (failed).
A request refused before any model is tried (bad input, a model that does not route, a disabled model, a
prompt beyond the context window) is not counted: nothing was generated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Literal, Protocol

from app.config.snapshot import ConfigSource
from app.db.text import without_nul
from app.errors import ErrorCode, ServiceError
from app.providers.registry import Candidate
from app.providers.routed import RoutedStream
from app.providers.types import ChatChunk, ChatMessage, GenerationOptions, Usage
from app.services.images import ImageStore, Upload
from app.services.outcome import (
    Answer,
    UsageObserver,
    completed_record,
    failed_record,
    notify,
    reply_usage,
    stopped_record,
)
from app.services.turn_request import TurnRequests
from app.services.usage import UsageRecord
from app.services.vision import vision_candidates

log = logging.getLogger(__name__)


class Router(Protocol):
    async def candidates(self, model_name: str) -> list[Candidate]: ...
    async def open_chat_stream(self, candidates: Sequence[Candidate]) -> RoutedStream: ...


@dataclass(frozen=True)
class PromptMessage:
    """One message a client sent: its role, its text, and its images as uploads (checked like any upload)."""

    role: Literal["system", "user", "assistant"]
    text: str
    uploads: tuple[Upload, ...] = ()


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: tuple[PromptMessage, ...]
    options: GenerationOptions | None = None


class CompletionService:
    def __init__(
        self,
        config: ConfigSource,
        router: Router | None,
        images: ImageStore,
        observers: Sequence[UsageObserver] = (),
    ) -> None:
        self.config = config
        self.router = router
        self.images = images
        self.requests = TurnRequests(config)
        #: told of every generation's usage, as the chat turn's are (usage statistics, metrics)
        self.observers = list(observers)

    async def open(self, request: CompletionRequest) -> Completion:
        """Route, build and open the reply: when this returns, its first chunk has arrived (fallback is over).

        Raises ServiceError for a request that cannot be answered (before anything was generated)."""
        router = self.router
        if router is None:
            raise ServiceError(ErrorCode.PROVIDER_UNAVAILABLE, "No model provider is configured")
        system_prompt, history, current = self._conversation(request.messages)
        routed = await router.candidates(request.model)
        if routed[0].error is not None:  # the requested name does not route: refused, nothing tried
            raise routed[0].error
        if current.images or any(message.images for message in history):
            vision = await vision_candidates(routed, self.config.settings.vision_fallback_model, router.candidates)
            if vision is not None:
                routed = vision
            elif routed[0].info is not None:  # known not to see (a model the catalog does not know is asked as it is)
                raise ServiceError(
                    ErrorCode.CAPABILITY_UNSUPPORTED,
                    f"Model {routed[0].asked} cannot see images and no vision model is configured for them "
                    "(vision_fallback_model)",
                    details={"model": routed[0].asked, "capability": "vision", "field": "messages"},
                )
        candidates = self.requests.for_candidates(routed, history, current, request.options, system_prompt)
        first = candidates[0]
        assert first.resolved is not None
        answer = Answer(first.resolved.name, first.resolved.provider.name)
        timeout_s = self.config.settings.stream_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                stream = await router.open_chat_stream(candidates)
        except TimeoutError:
            await notify(self.observers, stopped_record(answer, 0, timed_out=True))
            raise _timed_out(timeout_s) from None
        except ServiceError as exc:
            await notify(self.observers, failed_record(answer, 0, exc))
            raise
        except asyncio.CancelledError:
            await notify(self.observers, stopped_record(answer, 0, timed_out=False))
            raise
        answer.answered_by(stream)
        return Completion(stream, answer, deadline, timeout_s, self.observers)

    def _conversation(self, messages: Sequence[PromptMessage]) -> tuple[str | None, list[ChatMessage], ChatMessage]:
        """The client's system prompt (its system messages, joined; None when it sent none), the earlier
        messages and the last one, which must be the user's; images are checked as uploads are."""
        system = [m.text for m in messages if m.role == "system"]
        spoken = [(index, m) for index, m in enumerate(messages) if m.role != "system"]
        if not spoken or spoken[-1][1].role != "user":
            raise ServiceError(
                ErrorCode.INVALID_REQUEST,
                "The last message (after any system messages) must be the user's",
                details={"field": "messages"},
            )
        chat = [
            ChatMessage(role=m.role, content=m.text, images=self._images(m.uploads, index))  # type: ignore[arg-type]
            for index, m in spoken
        ]
        return ("\n\n".join(system) if system else None), chat[:-1], chat[-1]

    def _images(self, uploads: tuple[Upload, ...], index: int) -> list[str]:
        """One message's images, checked like any upload (count, size, real type), as base64."""
        if not uploads:
            return []
        try:
            return self.images.as_base64(self.images.validate(uploads))
        except ServiceError as exc:
            exc.details = {"field": f"messages[{index}]", **exc.details}
            raise


class Completion:
    """One opened reply: `model` answered (`fallback_from` names the model asked for when a fallback did).

    `chunks()` yields the text deltas and then one final chunk (`done`, with the finish reason and usage), and
    records the generation's usage however it ends; closing it early stops the generation."""

    def __init__(
        self,
        stream: RoutedStream,
        answer: Answer,
        deadline: float,
        timeout_s: float,
        observers: Sequence[UsageObserver],
    ) -> None:
        self.stream = stream
        self.answer = answer
        self.model = stream.model
        self.fallback_from = stream.fallback_from
        self._deadline = deadline
        self._timeout_s = timeout_s
        self._observers = observers

    async def chunks(self) -> AsyncIterator[ChatChunk]:
        answer = self.answer
        count = 0
        record: UsageRecord | None = None
        try:
            while True:
                try:
                    async with asyncio.timeout_at(self._deadline):  # around the wait only, never a yield
                        chunk = await anext(self.stream)
                except StopAsyncIteration:
                    raise ServiceError(
                        ErrorCode.GENERATION_FAILED, "The model stream ended without a final chunk"
                    ) from None
                except TimeoutError:
                    record = stopped_record(answer, count, timed_out=True)
                    raise _timed_out(self._timeout_s) from None
                text = without_nul(chunk.text)
                if text:
                    if answer.first_token_at is None:
                        answer.first_token_at = time.perf_counter()
                    count += 1
                if not chunk.done:
                    if text:
                        yield ChatChunk(text=text)
                    continue
                if chunk.finish_reason not in ("stop", "length", None):
                    raise ServiceError(
                        ErrorCode.GENERATION_FAILED,
                        f"{self.model} stopped the reply before its end ({chunk.finish_reason})",
                        details={"model": self.model, "finishReason": chunk.finish_reason},
                    )
                usage = reply_usage(chunk, answer, count)
                record = completed_record(answer, usage)
                finish = chunk.finish_reason or "stop"
                yield ChatChunk(
                    text=text,
                    done=True,
                    finish_reason=finish,
                    usage=Usage(prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0),
                )
                return
        except (asyncio.CancelledError, GeneratorExit):
            if record is None:  # the client went away: the generation stops here
                record = stopped_record(answer, count, timed_out=False)
            raise
        except ServiceError as exc:
            if record is None:
                record = failed_record(answer, count, exc)
            raise
        except Exception as exc:
            log.error("completion from %s failed", self.model, exc_info=exc)
            error = ServiceError(ErrorCode.GENERATION_FAILED, "The model failed while generating the reply")
            record = failed_record(answer, count, error)
            raise error from exc
        finally:
            try:
                with suppress(Exception):
                    await self.stream.aclose()  # stops the upstream generation (frees the model's place)
            finally:
                if record is not None:
                    await notify(self._observers, record)

    async def reply(self) -> tuple[str, ChatChunk]:
        """The whole reply at once: its text and the final chunk."""
        parts: list[str] = []
        async with aclosing(self.chunks()) as chunks:
            async for chunk in chunks:
                parts.append(chunk.text)
                if chunk.done:
                    return "".join(parts), chunk
        raise ServiceError(ErrorCode.GENERATION_FAILED, "The model stream ended without a final chunk")


def _timed_out(timeout_s: float) -> ServiceError:
    return ServiceError(
        ErrorCode.TIMEOUT,
        f"The reply did not finish within {timeout_s:g} s (stream_timeout_s)",
        details={"timeoutS": timeout_s},
    )
