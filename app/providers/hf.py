"""The `hf` provider: models exported to ONNX (`beth-chat export`), run in-process by `inference.ModelPool`.

The list comes from the manifests in the models directory (read without loading anything); a folder
that is not a usable export is left out of the list and named in the provider's health, so one broken
export never hides or breaks the others. Engine errors carry `HF_*` codes; each maps onto the one error
set (`inference.errors.GENERIC_CODE`), and the original code stays in `details.hfCode`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.errors import ErrorCode, ServiceError
from app.providers.base import ModelProvider
from app.providers.types import (
    Capabilities,
    ChatChunk,
    ChatRequest,
    FinishReason,
    GenerationOptions,
    ModelInfo,
    ProviderHealth,
    Usage,
)

# submodules, not the package: an editable install made before inference/ existed maps it as a namespace
from inference.errors import InferenceError
from inference.events import GenerationResult, TextDelta
from inference.manifest import BrokenExport, Manifest, scan_manifests
from inference.params import GenerationParams
from inference.pool import ModelPool
from inference.pool_settings import PoolSettings
from inference.tokenizer import ChatTokenizer
from inference.vision import max_image_tokens

#: sampling for an export whose `generation_config.json` sets none: in line with common local runtimes, so
#: that small models end their replies instead of looping (a mild repetition penalty, a trimmed tail)
SAMPLING_DEFAULTS: dict[str, float] = {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "repetition_penalty": 1.1}

log = logging.getLogger(__name__)
#: texts whose token counts each model keeps (a few conversations' worth of messages)
COUNTED_TEXTS = 2048

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "cancelled": "cancelled",
    "timeout": "timeout",
}


class HFProvider(ModelProvider):
    name = "hf"
    prefix = "hf/"

    def __init__(
        self,
        models_dir: Path,
        settings: PoolSettings | None = None,
        *,
        default_max_tokens: int = 512,
        pool: ModelPool | None = None,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.default_max_tokens = default_max_tokens
        self.pool = pool or ModelPool(self.models_dir, settings or PoolSettings())
        self._counters: dict[str, Callable[[str], int]] = {}
        self._starting: asyncio.Task[None] | None = None

    async def initialize(self) -> None:
        """Start the pool in the background: preloading takes seconds and must not delay start-up."""
        self._starting = asyncio.create_task(self._start_pool(), name="hf-pool-start")

    async def _start_pool(self) -> None:
        try:
            await self.pool.start()
        except Exception as exc:
            log.error("preloading hf models failed (they load on first use instead): %s", exc)
            self.pool.settings = replace(self.pool.settings, preload=())
            await self.pool.start()

    async def reconfigure(self, settings: PoolSettings) -> None:
        """The hot reload's way in: new pool settings for the running pool (see `ModelPool.reconfigure`).

        A preload entry that cannot load is logged, not raised: the rest of the change still applies and
        the model loads on first use instead, as at start-up.
        """
        try:
            await self.pool.reconfigure(settings)
        except InferenceError as exc:
            log.error("preloading hf models failed (they load on first use instead): %s", exc.message)

    async def token_counter(self, native_name: str) -> Callable[[str], int] | None:
        """Counts with the export's own tokenizer (read once, without loading the model). Counts are kept per
        text, since every turn counts the whole history again and only its newest messages are new."""
        counter = self._counters.get(native_name)
        if counter is None:
            try:
                info = await asyncio.to_thread(self.pool.info, native_name)
                tokenizer = await asyncio.to_thread(ChatTokenizer, info.path)
            except (InferenceError, OSError) as exc:
                log.debug("no tokenizer for %s, the turn estimates instead: %s", native_name, exc)
                return None
            counter = self._counters[native_name] = _counting(tokenizer)
        return counter

    async def shutdown(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        await self.pool.close()

    # -- status and models ------------------------------------------------------------------------------

    async def health_check(self) -> ProviderHealth:
        started = time.perf_counter()
        manifests, broken = await self._scan()
        loaded = self.pool.loaded()
        runtimes = sorted({m.provider for m in loaded})
        summary = f"{len(manifests)} exported models in {self.models_dir}, {len(loaded)} loaded"
        if runtimes:
            summary += f" ({', '.join(runtimes)})"
        latency = round((time.perf_counter() - started) * 1000, 2)
        if broken:
            problems = "; ".join(f"{b.path.name}: {b.reason}" for b in broken)
            return ProviderHealth(
                status="degraded", latency_ms=latency, detail=f"{summary}; unusable exports: {problems}"
            )
        if not manifests:
            return ProviderHealth(
                status="degraded",
                latency_ms=latency,
                detail=f"no exported models in {self.models_dir}; run `beth-chat export`",
            )
        return ProviderHealth(status="healthy", latency_ms=latency, detail=summary)

    async def list_models(self) -> list[ModelInfo]:
        manifests, _ = await self._scan()
        loaded = {m.alias for m in self.pool.loaded()}
        return [self._model_info(manifest, manifest.alias in loaded) for manifest in manifests]

    async def _scan(self) -> tuple[list[Manifest], list[BrokenExport]]:
        return await asyncio.to_thread(scan_manifests, self.models_dir)

    def _model_info(self, manifest: Manifest, loaded: bool) -> ModelInfo:
        return ModelInfo(
            name=self.prefix + manifest.alias,
            provider=self.name,
            native_name=manifest.alias,
            display_name=manifest.alias,
            family=manifest.model_type or None,
            parameter_size=_parameter_size(manifest.parameter_count),
            quantization=manifest.quantization,
            context_length=manifest.context_length,
            capabilities=Capabilities(
                text=manifest.capabilities.text, vision=manifest.capabilities.vision, streaming=True
            ),
            loaded=loaded,
            size_bytes=manifest.size_bytes,
            metadata={
                "architecture": manifest.architecture,
                "source": manifest.source.kind,
                "validated": manifest.validation.passed,
                "createdAt": manifest.created_at,
                **_image_tokens(manifest),
            },
        )

    # -- load and unload ---------------------------------------------------------------------------------

    async def load(self, native_name: str) -> None:
        try:
            await self.pool.acquire(native_name)
        except InferenceError as exc:
            raise to_service_error(exc, self.prefix + native_name) from exc
        await self.pool.release(native_name)

    async def unload(self, native_name: str) -> None:
        await self.model_info(native_name)  # MODEL_NOT_FOUND for a name that is not an export
        await self.pool.unload(native_name)

    # -- chat ----------------------------------------------------------------------------------------------

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Text deltas from the model's worker thread; closing this iterator cancels the decode loop."""
        model = self.prefix + request.model
        messages: list[dict[str, Any]] = [{"role": m.role, "content": m.content} for m in request.messages]
        if any(m.images for m in request.messages):
            await self._require_vision(request.model)
            for message, source in zip(messages, request.messages, strict=True):
                if source.images:
                    message["images"] = [_image_bytes(image, model) for image in source.images]
        try:
            async with self.pool.lease(request.model) as chat_model:
                params = self._params(request.options, chat_model.info.sampling_defaults)
                events = chat_model.stream_chat(messages, params, timeout_s=request.timeout_s)
                async with contextlib.aclosing(events):
                    async for event in events:
                        if isinstance(event, TextDelta):
                            if event.text:
                                yield ChatChunk(text=event.text)
                        elif isinstance(event, GenerationResult):
                            yield ChatChunk(done=True, usage=_usage(event), finish_reason=_finish(event))
        except InferenceError as exc:
            raise to_service_error(exc, model) from exc

    async def _require_vision(self, native_name: str) -> None:
        """CAPABILITY_UNSUPPORTED unless the export has a vision encoder (its manifest says so)."""
        model = self.prefix + native_name
        try:
            info = await asyncio.to_thread(self.pool.info, native_name)
        except InferenceError as exc:
            raise to_service_error(exc, model) from exc
        if not info.capabilities.get("vision"):
            raise ServiceError(
                ErrorCode.CAPABILITY_UNSUPPORTED,
                f"{model} cannot see images",
                details={"provider": self.name, "model": model, "capability": "vision"},
            )

    def _params(self, options: GenerationOptions, model_defaults: Mapping[str, float]) -> GenerationParams:
        sampling = sampling_for(options, model_defaults)
        return GenerationParams(
            max_new_tokens=options.max_tokens or self.default_max_tokens,
            temperature=sampling["temperature"],
            top_k=int(sampling["top_k"]),
            top_p=sampling["top_p"],
            repetition_penalty=sampling["repetition_penalty"],
            seed=options.seed,
            stop_strings=tuple(options.stop),
            lookahead_tokens=self.pool.settings.lookahead_tokens,
        )


def _counting(tokenizer: ChatTokenizer) -> Callable[[str], int]:
    @functools.lru_cache(maxsize=COUNTED_TEXTS)
    def count(text: str) -> int:
        return len(tokenizer.encode(text))

    return count


def sampling_for(options: GenerationOptions, model_defaults: Mapping[str, float]) -> dict[str, float]:
    """Each sampling value from the options (the request's over the model's configuration), else the export's
    own `generation_config`, else the service's defaults."""
    chosen: dict[str, float] = {}
    for name, default in SAMPLING_DEFAULTS.items():
        value = getattr(options, name)
        chosen[name] = value if value is not None else model_defaults.get(name, default)
    return chosen


def to_service_error(exc: InferenceError, model: str) -> ServiceError:
    """An engine error in the one error set; the `HF_*` code is kept in details."""
    return ServiceError(
        ErrorCode(exc.generic_code),
        exc.message,
        details={**_plain(exc.details), "hfCode": exc.code, "provider": "hf", "model": model},
    )


def _plain(details: dict[str, object]) -> dict[str, object]:
    return {k: v if isinstance(v, str | int | float | bool | type(None) | list) else str(v) for k, v in details.items()}


def _image_bytes(image: str, model: str) -> bytes:
    """A message's image (base64, as the turn sends it) as bytes; INVALID_REQUEST when it is not base64."""
    try:
        return base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST, "an image is not valid base64", details={"provider": "hf", "model": model}
        ) from exc


def _usage(result: GenerationResult) -> Usage:
    usage = result.usage
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        time_to_first_token_ms=usage.time_to_first_token_s * 1000 if usage.time_to_first_token_s is not None else None,
        duration_ms=usage.duration_s * 1000,
        tokens_per_second=usage.decode_tokens_per_s,
    )


def _finish(result: GenerationResult) -> FinishReason:
    return FINISH_REASONS.get(result.finish_reason, "stop")


def _parameter_size(count: int) -> str | None:
    """`135M`, `1.7B`: the way Ollama writes parameter sizes."""
    if count <= 0:
        return None
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)


def _image_tokens(manifest: Manifest) -> dict[str, object]:
    """What one image costs a vision export's context at most (its tokens with the markers around them; the
    largest tile grid for an export that splits images)."""
    if manifest.vision is None:
        return {}
    return {"imageTokens": max_image_tokens(manifest.vision)}
