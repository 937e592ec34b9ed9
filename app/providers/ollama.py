"""The `ollama` provider: Ollama's HTTP API over httpx (`/api/tags`, `/api/show`, `/api/ps`, `/api/chat`).

Chat always sends `num_ctx` (the request's context length, else the model's, capped by `ollama_num_ctx`)
because Ollama's own default silently truncates long conversations, and always sends `keep_alive`.
`/api/show` answers (capabilities, context length) are cached per model digest: they never change for
one digest, and the old service's habit of asking Ollama before every chat is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec

from app.errors import ErrorCode, ServiceError
from app.providers import ollama_errors
from app.providers.http import HTTPProvider, ms_since, stream_part
from app.providers.types import (
    Capabilities,
    ChatChunk,
    ChatRequest,
    FinishReason,
    GenerationOptions,
    ModelInfo,
    Usage,
)

SHOW_CONCURRENCY = 4
VISION_FAMILIES = ("clip", "mllama")

log = logging.getLogger(__name__)


class ShowFacts(msgspec.Struct, frozen=True):
    """What `/api/show` tells about one model (cached)."""

    context_length: int | None
    capabilities: Capabilities
    family: str | None
    parameter_size: str | None
    quantization: str | None


class OllamaProvider(HTTPProvider):
    name = "ollama"
    prefix = "ollama/"
    health_path = "/api/version"
    address_hint = "is OLLAMA_HOST an Ollama server?"

    def __init__(
        self,
        host: str,
        *,
        timeout_s: float = 120.0,
        num_ctx: int = 8192,
        keep_alive_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        name: str = "ollama",
    ) -> None:
        super().__init__(host, timeout_s=timeout_s, transport=transport)
        # more Ollama hosts than the main one are configured as `[providers.<name>]`, each its own prefix
        self.name = name
        self.prefix = f"{name}/"
        self.host = self.base_url
        self.num_ctx = num_ctx
        self.keep_alive_s = keep_alive_s
        self._show_cache: dict[tuple[str, str], ShowFacts] = {}

    # -- status and models ------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return ollama_errors.label(self.name)

    def health_detail(self, data: dict[str, Any]) -> str:
        return f"{self.label} {data.get('version', 'unknown')}"

    async def list_models(self) -> list[ModelInfo]:
        tags = await self.get_json("/api/tags")
        entries = [m for m in (tags.get("models") or []) if isinstance(m, dict) and m.get("name")]
        loaded = await self._loaded_names()
        limit = asyncio.Semaphore(SHOW_CONCURRENCY)

        async def describe(entry: dict[str, Any]) -> ModelInfo:
            async with limit:
                facts = await self._facts(str(entry["name"]), str(entry.get("digest") or ""), entry.get("details"))
            return self._model_info(str(entry["name"]), facts, loaded, entry)

        return list(await asyncio.gather(*(describe(entry) for entry in entries)))

    async def model_info(self, native_name: str) -> ModelInfo:
        facts = await self._facts(native_name, "", None)
        return self._model_info(native_name, facts, await self._loaded_names(), {})

    def _model_info(self, native: str, facts: ShowFacts, loaded: set[str], entry: dict[str, Any]) -> ModelInfo:
        metadata: dict[str, object] = {"maxContextLength": facts.context_length}
        if entry.get("digest"):
            metadata["digest"] = entry["digest"]
        if entry.get("modified_at"):
            metadata["modifiedAt"] = entry["modified_at"]
        return ModelInfo(
            name=self.prefix + native,
            provider=self.name,
            native_name=native,
            display_name=native,
            family=facts.family,
            parameter_size=facts.parameter_size,
            quantization=facts.quantization,
            context_length=self._context_length(facts),
            capabilities=facts.capabilities,
            loaded=native in loaded,
            size_bytes=entry.get("size") if isinstance(entry.get("size"), int) else None,
            metadata=metadata,
        )

    def _context_length(self, facts: ShowFacts) -> int:
        """The model's context, capped by `num_ctx`."""
        return min(facts.context_length, self.num_ctx) if facts.context_length else self.num_ctx

    async def _loaded_names(self) -> set[str]:
        """Models in memory (`/api/ps`); an Ollama without `/api/ps` just reports none loaded."""
        try:
            data = await self.get_json("/api/ps")
        except ServiceError as exc:
            if exc.code == ErrorCode.PROVIDER_UNAVAILABLE:
                raise
            return set()
        return {str(m.get("name") or m.get("model")) for m in data.get("models") or [] if isinstance(m, dict)}

    async def _facts(self, native: str, digest: str, details: object) -> ShowFacts:
        key = (native, digest)
        cached = self._show_cache.get(key)
        if cached is not None:
            return cached
        data = await self.post_json("/api/show", {"model": native}, model=self.prefix + native)
        facts = _show_facts(data, details)
        self._show_cache[key] = facts
        return facts

    # -- load and unload ---------------------------------------------------------------------------------

    async def load(self, native_name: str) -> None:
        """An empty chat loads the model and keeps it for `keep_alive` (Ollama's documented way)."""
        await self.post_json(
            "/api/chat",
            {"model": native_name, "messages": [], "stream": False, "keep_alive": _keep_alive(self.keep_alive_s)},
            model=self.prefix + native_name,
        )

    async def unload(self, native_name: str) -> None:
        await self.post_json(
            "/api/chat",
            {"model": native_name, "messages": [], "stream": False, "keep_alive": 0},
            model=self.prefix + native_name,
        )

    # -- chat ----------------------------------------------------------------------------------------------

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """NDJSON chunks from `/api/chat`; closing this iterator closes the HTTP stream (Ollama then stops)."""
        model = self.prefix + request.model
        body = {
            "model": request.model,
            "messages": [
                {"role": m.role, "content": m.content, **({"images": m.images} if m.images else {})}
                for m in request.messages
            ],
            "stream": True,
            "options": await self._options(request.model, request.options),
            "keep_alive": _keep_alive(request.keep_alive_s if request.keep_alive_s is not None else self.keep_alive_s),
        }
        started = time.perf_counter()
        deadline = started + request.timeout_s if request.timeout_s else None
        first_at: float | None = None
        received = False
        try:
            async with self.streaming("/api/chat", body, model) as response:
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    part = stream_part(line, model, "Ollama", "line")
                    if isinstance(part.get("error"), str):
                        raise ollama_errors.from_stream_line(part["error"], model)
                    received = True
                    text = str((part.get("message") or {}).get("content") or "")
                    if text and first_at is None:
                        first_at = time.perf_counter()
                    if part.get("done"):
                        yield ChatChunk(
                            text=text, done=True, usage=_usage(part, started, first_at), finish_reason=_finish(part)
                        )
                        return
                    if text:
                        yield ChatChunk(text=text)
                    if deadline is not None and time.perf_counter() > deadline:
                        yield ChatChunk(done=True, usage=_usage({}, started, first_at), finish_reason="timeout")
                        return
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, model, started=received) from exc
        raise ServiceError(
            ErrorCode.GENERATION_FAILED if received else ErrorCode.PROVIDER_UNAVAILABLE,
            f"Ollama ended the reply from {request.model} without its final part",
            details={"provider": self.name, "model": model},
        )

    async def _options(self, native: str, options: GenerationOptions) -> dict[str, Any]:
        num_ctx = options.context_length
        if num_ctx is None:
            try:  # only the (cached) `/api/show` facts: which models are loaded does not matter here
                num_ctx = self._context_length(await self._facts(native, "", None))
            except ServiceError:
                num_ctx = None  # the chat call itself will report what is wrong
        sent: dict[str, Any] = {"num_ctx": num_ctx or self.num_ctx}
        for key, value in (
            ("temperature", options.temperature),
            ("top_p", options.top_p),
            ("top_k", options.top_k),
            ("seed", options.seed),
            ("num_predict", options.max_tokens),
            ("repeat_penalty", options.repetition_penalty),
        ):
            if value is not None:
                sent[key] = value
        if options.stop:
            sent["stop"] = list(options.stop)
        return sent

    # -- errors (Ollama's table: `ollama_errors`) --------------------------------------------------------

    def transport_failure(self, exc: httpx.HTTPError, model: str | None, started: bool) -> ServiceError:
        return ollama_errors.from_transport(exc, model, started=started, provider=self.name)

    def status_error(self, status: int, body: bytes, model: str) -> ServiceError:
        return ollama_errors.from_status(status, ollama_errors.error_text(body), model)


def _show_facts(data: dict[str, Any], tag_details: object) -> ShowFacts:
    details = data.get("details") if isinstance(data.get("details"), dict) else {}
    if isinstance(tag_details, dict):
        details = {**tag_details, **details}
    info = data.get("model_info") if isinstance(data.get("model_info"), dict) else {}
    context = next(
        (int(v) for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int) and v > 0), None
    )
    declared = [str(c) for c in data.get("capabilities") or []]
    families = [str(f).lower() for f in details.get("families") or []]
    vision = "vision" in declared or any(f in VISION_FAMILIES for f in families)
    text = "completion" in declared if declared else True
    return ShowFacts(
        context_length=context,
        capabilities=Capabilities(text=text, vision=vision, streaming=True),
        family=details.get("family") or None,
        parameter_size=details.get("parameter_size") or None,
        quantization=details.get("quantization_level") or None,
    )


def _usage(final: dict[str, Any], started: float, first_at: float | None) -> Usage:
    """Ollama's counts and nanosecond durations; time to first token as measured here."""
    eval_count = final.get("eval_count")
    eval_ns = final.get("eval_duration")
    total_ns = final.get("total_duration")
    return Usage(
        prompt_tokens=final.get("prompt_eval_count"),
        completion_tokens=eval_count,
        time_to_first_token_ms=(first_at - started) * 1000 if first_at is not None else None,
        duration_ms=total_ns / 1e6 if isinstance(total_ns, int) else ms_since(started),
        tokens_per_second=eval_count / (eval_ns / 1e9) if eval_count and eval_ns else None,
    )


def _finish(final: dict[str, Any]) -> FinishReason:
    return "length" if final.get("done_reason") == "length" else "stop"


def _keep_alive(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds
