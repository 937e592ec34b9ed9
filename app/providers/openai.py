"""The `openai` provider: any OpenAI-compatible server (vLLM, TGI, llama.cpp's server, LiteLLM, another beth-chat)
over its `/v1` API: `GET /models`, and `POST /chat/completions` streamed as server-sent events.

The main one is `openai/<model>` (`OPENAI_BASE_URL`); each `[providers.<name>] type = "openai"` table is another,
`<name>/<model>`. The API key travels as `Authorization: Bearer` and nowhere else: upstream texts that quote it are
cleaned before they reach a message. Only the generation options the OpenAI API defines are sent (temperature,
top_p, max_tokens, seed, stop); `top_k` and `repetition_penalty` are not part of it, and a strict server refuses
unknown fields. Images go as `image_url` parts with `data:` URLs; a server that cannot see answers 400, which is
CAPABILITY_UNSUPPORTED. A stream asks for usage (`stream_options.include_usage`); a server that sends none has its
reply's tokens counted as its text deltas.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from app.errors import ErrorCode, ServiceError
from app.image_types import sniff_image_type
from app.providers import openai_errors
from app.providers.http import HTTPProvider, ms_since, stream_part
from app.providers.types import (
    Capabilities,
    ChatChunk,
    ChatMessage,
    ChatRequest,
    FinishReason,
    GenerationOptions,
    ModelInfo,
    Usage,
)

#: where servers say how long a context a model takes (vLLM, then others)
CONTEXT_FIELDS = ("max_model_len", "context_length", "context_window")
REDACTED = "***"


class OpenAIProvider(HTTPProvider):
    name = "openai"
    prefix = "openai/"
    health_path = "/models"
    address_hint = "is its base URL an OpenAI-compatible server's /v1 root?"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        models: Iterable[str] = (),
        timeout_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
        name: str = "openai",
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        super().__init__(base_url, timeout_s=timeout_s, transport=transport, headers=headers)
        self.name = name
        self.prefix = f"{name}/"
        self._api_key = api_key
        #: the only models listed and served; empty: every model the server lists
        self.models = frozenset(models)

    # -- status and models ------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return openai_errors.label(self.name)

    def health_detail(self, data: dict[str, Any]) -> str:
        return f"{self.label}, {len(self._entries(data))} models"

    async def list_models(self) -> list[ModelInfo]:
        return [self._model_info(entry) for entry in self._entries(await self.get_json("/models"))]

    def _entries(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """The listed models this provider serves (`models` limits them)."""
        entries = [e for e in data.get("data") or [] if isinstance(e, dict) and isinstance(e.get("id"), str)]
        return [e for e in entries if not self.models or e["id"] in self.models]

    def _model_info(self, entry: dict[str, Any]) -> ModelInfo:
        native = str(entry["id"])
        contexts = [entry.get(key) for key in CONTEXT_FIELDS]
        metadata: dict[str, object] = {}
        if entry.get("owned_by"):
            metadata["ownedBy"] = entry["owned_by"]
        return ModelInfo(
            name=self.prefix + native,
            provider=self.name,
            native_name=native,
            display_name=native,
            context_length=next((n for n in contexts if isinstance(n, int) and n > 0), None),
            capabilities=Capabilities(text=True, vision=_declares_vision(entry), streaming=True),
            metadata=metadata,
        )

    # -- chat ----------------------------------------------------------------------------------------------

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Server-sent events from `/chat/completions`; closing this iterator closes the HTTP stream, which
        is how an OpenAI-compatible server learns to stop generating."""
        model = self.prefix + request.model
        if self.models and request.model not in self.models:
            raise ServiceError(
                ErrorCode.MODEL_NOT_FOUND,
                f"Model {model} is not among the models {self.name} serves",
                details={"provider": self.name, "model": model},
            )
        body = {
            "model": request.model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            **_options(request.options),
        }
        started = time.perf_counter()
        deadline = started + request.timeout_s if request.timeout_s else None
        first_at: float | None = None
        deltas = 0
        finish: FinishReason | None = None
        usage: dict[str, Any] = {}
        try:
            async with self.streaming("/chat/completions", body, model) as response:
                async for data in _sse_data(response.aiter_lines()):
                    if data == "[DONE]":
                        finish = finish or "stop"
                        break
                    part = stream_part(data, model, "The server", "event")
                    if part.get("error") is not None:
                        raise self._scrubbed(
                            openai_errors.from_stream_error(part["error"], model, self.name, started=deltas > 0)
                        )
                    if isinstance(part.get("usage"), dict):
                        usage = part["usage"]
                    text, reason = _choice(part)
                    finish = reason or finish
                    if text:
                        deltas += 1
                        first_at = first_at or time.perf_counter()
                        yield ChatChunk(text=text)
                    if deadline is not None and time.perf_counter() > deadline:
                        finish = "timeout"
                        break
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, model, started=deltas > 0) from exc
        if finish is None:
            raise ServiceError(
                ErrorCode.GENERATION_FAILED if deltas else ErrorCode.PROVIDER_UNAVAILABLE,
                f"{self.label} ended the reply from {request.model} without finishing it",
                details={"provider": self.name, "model": model},
            )
        yield ChatChunk(done=True, usage=_usage(usage, deltas, started, first_at), finish_reason=finish)

    # -- errors (the table: `openai_errors`) -------------------------------------------------------------

    def transport_failure(self, exc: httpx.HTTPError, model: str | None, started: bool) -> ServiceError:
        return openai_errors.from_transport(exc, model, started=started, provider=self.name)

    def status_error(self, status: int, body: bytes, model: str) -> ServiceError:
        return self._scrubbed(openai_errors.from_status(status, openai_errors.error_text(body), model, self.name))

    def _scrubbed(self, error: ServiceError) -> ServiceError:
        """The error without the API key, should the server have quoted it."""
        key = self._api_key
        if key and len(key) >= 4:
            error.message = error.message.replace(key, REDACTED)
            error.details = {k: v.replace(key, REDACTED) if isinstance(v, str) else v for k, v in error.details.items()}
        return error


def _message(message: ChatMessage) -> dict[str, Any]:
    """A message in the chat completions shape; with images, a list of a text part and `image_url` parts."""
    if not message.images:
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
    parts += [{"type": "image_url", "image_url": {"url": _data_url(image)}} for image in message.images]
    return {"role": message.role, "content": parts}


def _data_url(image: str) -> str:
    """A base64 image as a `data:` URL, its type read from its first bytes."""
    try:
        head = base64.b64decode(image[:24], validate=False)
    except (binascii.Error, ValueError):
        head = b""
    return f"data:{sniff_image_type(head) or 'image/png'};base64,{image}"


def _options(options: GenerationOptions) -> dict[str, Any]:
    """The options the OpenAI API defines, those that are set (the server's defaults for the rest)."""
    sent: dict[str, Any] = {
        key: value
        for key, value in (
            ("temperature", options.temperature),
            ("top_p", options.top_p),
            ("max_tokens", options.max_tokens),
            ("seed", options.seed),
        )
        if value is not None
    }
    if options.stop:
        sent["stop"] = list(options.stop)
    return sent


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The `data` of each server-sent event (lines of one event joined); comments and other fields skipped."""
    pending: list[str] = []
    async for line in lines:
        if not line:
            if pending:
                yield "\n".join(pending)
                pending = []
        elif line.startswith("data:"):
            pending.append(line[5:].removeprefix(" "))
    if pending:
        yield "\n".join(pending)


def _choice(part: dict[str, Any]) -> tuple[str, FinishReason | None]:
    """The first choice's text delta and finish reason (a usage-only event has no choices)."""
    choices = part.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "", None
    choice = choices[0]
    delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
    content = delta.get("content")
    reason = choice.get("finish_reason")
    finish: FinishReason | None = None if reason is None else "length" if reason == "length" else "stop"
    return (content if isinstance(content, str) else ""), finish


def _usage(usage: dict[str, Any], deltas: int, started: float, first_at: float | None) -> Usage:
    """The server's token counts (else the text deltas counted); times as measured here."""
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    completion = completion if isinstance(completion, int) else deltas
    generating_s = time.perf_counter() - first_at if first_at is not None else 0.0
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) else None,
        completion_tokens=completion,
        time_to_first_token_ms=(first_at - started) * 1000 if first_at is not None else None,
        duration_ms=ms_since(started),
        tokens_per_second=completion / generating_s if completion and generating_s > 0 else None,
    )


def _declares_vision(entry: dict[str, Any]) -> bool:
    """Whether a listed model says it takes images: `capabilities` as a list or a table naming `vision`
    (servers that say nothing are taken as text models)."""
    capabilities = entry.get("capabilities")
    if isinstance(capabilities, list):
        return "vision" in capabilities
    if isinstance(capabilities, dict):
        return capabilities.get("vision") is True
    return False
