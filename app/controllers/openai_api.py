"""The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions` (JSON or server-sent events).

Stateless: nothing is stored but usage statistics (`services/completions.py`). Who may call it is the guard's
(`openai_guard.py`); every error has OpenAI's shape (`app/openai_api_errors.py`). A stream sends `data:` lines of
`chat.completion.chunk` objects: the role first, then the text deltas, then the finish reason, then (with
`stream_options.include_usage`) the usage with no choices, then `data: [DONE]`; an error after the start is
one `data:` line with the error body, and nothing follows it. A client that closes the stream stops the reply.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.response import Stream

from app.controllers.openai_guard import openai_clients_only
from app.controllers.sse import SSE_HEADERS, with_keepalive
from app.errors import ServiceError
from app.openai_api_errors import OPENAI_EXCEPTION_HANDLERS, stream_error
from app.openapi import ChatCompletionsOperation, body, openai_api_errors
from app.providers.types import ChatChunk
from app.schemas.openai_api import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    CompletionUsage,
    Delta,
    ModelCard,
    ModelCardList,
)
from app.services.catalog import ModelCatalog
from app.services.completions import Completion, CompletionService

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


class OpenAIController(Controller):
    path = "/v1"
    tags = ("OpenAI-compatible",)
    guards = (openai_clients_only,)
    exception_handlers = OPENAI_EXCEPTION_HANDLERS  # type: ignore[assignment]

    @get(
        "/models",
        summary="Every model of every provider, as OpenAI lists models",
        responses=openai_api_errors(401, 403),
    )
    async def list_models(self, catalog: ModelCatalog) -> ModelCardList:
        return ModelCardList(data=[ModelCard.of(model) for model in await catalog.models()])

    @get(
        "/models/{name:path}",
        summary="One model, as OpenAI shows a model",
        responses=openai_api_errors(400, 401, 403, 404),
    )
    async def get_model(self, name: str, catalog: ModelCatalog) -> ModelCard:
        return ModelCard.of(await catalog.get(name.lstrip("/")))

    @post(
        "/chat/completions",
        status_code=200,
        summary="A chat completion, as OpenAI's API answers it (with `stream`, as server-sent events)",
        operation_class=ChatCompletionsOperation,
        responses={
            200: body(ChatCompletion, "The completion; with `stream`, `data:` chunks then `data: [DONE]`"),
            **openai_api_errors(400, 401, 403, 404, 413, 500, 502, 503, 504),
        },
    )
    async def chat_completions(self, data: ChatCompletionRequest, completions: CompletionService) -> Response[Any]:
        completion = await completions.open(data.as_completion())
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if data.stream:
            frames = _chunks(completion, reply_id, created, include_usage=data.include_usage)
            return Stream(with_keepalive(frames), media_type="text/event-stream", headers=SSE_HEADERS)
        text, final = await completion.reply()
        return Response(
            ChatCompletion(
                id=reply_id,
                created=created,
                model=completion.model,
                choices=[Choice(index=0, message=AssistantMessage(content=text), finish_reason=_finish(final))],
                usage=_usage(final),
            )
        )


async def _chunks(completion: Completion, reply_id: str, created: int, *, include_usage: bool) -> AsyncIterator[bytes]:
    def frame(choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> bytes:
        chunk = ChatCompletionChunk(id=reply_id, created=created, model=completion.model, choices=choices, usage=usage)
        return b"data: " + msgspec.json.encode(chunk) + b"\n\n"

    yield frame([ChunkChoice(index=0, delta=Delta(role="assistant", content=""))])
    try:
        async with aclosing(completion.chunks()) as chunks:
            async for chunk in chunks:
                if chunk.text:
                    yield frame([ChunkChoice(index=0, delta=Delta(content=chunk.text))])
                if chunk.done:
                    yield frame([ChunkChoice(index=0, delta=Delta(), finish_reason=_finish(chunk))])
                    if include_usage:
                        yield frame([], _usage(chunk))
    except Exception as exc:  # the stream has started: the client hears how it ended, and nothing follows
        if not isinstance(exc, ServiceError):
            log.error("the completion stream from %s failed", completion.model, exc_info=exc)
        yield stream_error(exc)
        return
    yield DONE


def _finish(final: ChatChunk) -> str:
    return "length" if final.finish_reason == "length" else "stop"


def _usage(final: ChatChunk) -> CompletionUsage:
    usage = final.usage
    return CompletionUsage.of(
        (usage.prompt_tokens if usage else None) or 0, (usage.completion_tokens if usage else None) or 0
    )
