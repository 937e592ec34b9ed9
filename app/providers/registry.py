"""`ProviderRegistry`: which provider serves a model name, and the one way to open a chat stream.

Routing rules (docs/architecture.md, "Model names and routing"):
- a name with a registered prefix (`hf/`, `ollama/`) goes to that provider, prefix removed;
- a reserved prefix whose provider is not configured (`openai/x`) is MODEL_NOT_FOUND;
- a bare name (`llama3.1:8b`) is looked up in the catalog's last list: an Ollama model of that name
  first, then any provider's model of that native name (`SmolLM2-135M-Instruct`); otherwise it goes to
  the bare-name provider (Ollama), so Ollama-only clients keep working even before the catalog knows it.

Fallback (`fallback_models`, in order) happens only before the first chunk, and only when the chosen
model failed because its provider is unavailable, overloaded, timed out, its circuit is open, or the
model could not be loaded (MODEL_LOAD_FAILED, MEMORY_EXCEEDED). Errors that are the request's own
(MODEL_NOT_FOUND: a typo must not be hidden behind another model's answer; INVALID_REQUEST;
CONTEXT_LENGTH_EXCEEDED; CAPABILITY_UNSUPPORTED) are raised as they are.

A turn routes once: `candidates` resolves the requested name and the fallback list, each with the
catalog's `ModelInfo`; the caller builds each candidate's request once (a fallback model has its own
context window, so the history is trimmed and the reply sized for it) and `open_chat_stream` tries them
in order. A candidate whose request could not be built carries the error instead and counts as an attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import msgspec

from app.config.settings import Settings
from app.config.snapshot import ConfigSource
from app.errors import ErrorCode, ServiceError
from app.providers.base import ModelProvider
from app.providers.circuit import CircuitBreaker
from app.providers.names import RESERVED_PREFIXES, closest_names, split_prefix
from app.providers.routed import RoutedStream
from app.providers.types import ChatChunk, ChatRequest, ModelInfo

log = logging.getLogger(__name__)

#: transient: worth another try of the same model, after a short pause, before any fallback
RETRY_ON: frozenset[ErrorCode] = frozenset({ErrorCode.PROVIDER_UNAVAILABLE, ErrorCode.OVERLOADED})
#: errors before the first chunk that let the next model in the fallback list try
FALLBACK_ON: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.PROVIDER_UNAVAILABLE,
        ErrorCode.OVERLOADED,
        ErrorCode.TIMEOUT,
        ErrorCode.MODEL_LOAD_FAILED,
        ErrorCode.MEMORY_EXCEEDED,
    }
)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name leads: the provider, its own name for the model, and the full prefixed name."""

    provider: ModelProvider
    native_name: str
    name: str


@dataclass(frozen=True)
class Candidate:
    """One model that may answer a turn: the name it was asked under, where that leads, what the catalog
    knows of it, its exact token counter (None: estimate), and what it will be sent (`request`, whose `model` is `resolved.native_name`) or why it
    cannot be tried (`error`). `resolved` is None only for a fallback name that does not route."""

    asked: str
    resolved: ResolvedModel | None
    info: ModelInfo | None = None
    counter: Callable[[str], int] | None = None
    request: ChatRequest | None = None
    error: ServiceError | None = None

    def sending(self, request: ChatRequest) -> Candidate:
        """This candidate with its request (the model field set to the provider's own name)."""
        assert self.resolved is not None
        return replace(self, request=msgspec.structs.replace(request, model=self.resolved.native_name))

    def failing(self, error: ServiceError) -> Candidate:
        return replace(self, error=error)


async def _no_info(_resolved: ResolvedModel) -> ModelInfo | None:
    return None


class ProviderRegistry:
    def __init__(
        self,
        config: ConfigSource | None = None,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        bare_provider: str = "ollama",
    ) -> None:
        #: the published configuration: the fallback models and retries are read from it when a turn needs them
        self.config = config or ConfigSource.of(Settings())
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        #: the provider that bare names go to when the catalog does not know them
        self.bare_provider = bare_provider
        self._providers: dict[str, ModelProvider] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._known: Callable[[], Sequence[ModelInfo]] = list
        self._info: Callable[[ResolvedModel], Awaitable[ModelInfo | None]] = _no_info

    # -- membership ----------------------------------------------------------------------------------

    def register(self, provider: ModelProvider) -> None:
        if provider.name in self._providers:
            raise ValueError(f"a provider named {provider.name!r} is already registered")
        self._providers[provider.name] = provider
        self._breakers[provider.name] = CircuitBreaker(provider.name, self.failure_threshold, self.cooldown_s)

    def unregister(self, name: str) -> ModelProvider | None:
        self._breakers.pop(name, None)
        return self._providers.pop(name, None)

    @property
    def fallback_models(self) -> tuple[str, ...]:
        return self.config.settings.fallback_models

    @property
    def retries(self) -> int:
        """Extra tries of a model whose provider is briefly unavailable or busy, before any fallback."""
        return self.config.settings.provider_retries

    @property
    def retry_backoff_s(self) -> float:
        return self.config.settings.provider_retry_backoff_s

    @property
    def providers(self) -> list[ModelProvider]:
        """In registration order (the catalog lists models in this order)."""
        return list(self._providers.values())

    def get(self, name: str) -> ModelProvider | None:
        return self._providers.get(name)

    def breaker(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def use_catalog(
        self,
        known_models: Callable[[], Sequence[ModelInfo]],
        model_info: Callable[[ResolvedModel], Awaitable[ModelInfo | None]] | None = None,
    ) -> None:
        """Where bare names and suggestions are looked up (the catalog's last list, never a live call), and
        where a routed model's info comes from for `candidates`."""
        self._known = known_models
        if model_info is not None:
            self._info = model_info

    async def initialize(self) -> None:
        for provider in self.providers:
            try:
                await provider.initialize()
            except Exception:  # one provider that cannot start must not stop the others
                log.exception("provider %s failed to initialize", provider.name)

    async def shutdown(self) -> None:
        for provider in reversed(self.providers):
            try:
                await provider.shutdown()
            except Exception:
                log.exception("provider %s failed to shut down", provider.name)

    # -- routing ---------------------------------------------------------------------------------------

    def resolve(self, model_name: str) -> ResolvedModel:
        """Route a name (see the module docstring); MODEL_NOT_FOUND lists the closest known names."""
        name = model_name.strip()
        if not name:
            raise ServiceError(ErrorCode.INVALID_REQUEST, "A model name is required", details={"field": "model"})
        prefixes = {p.prefix: p for p in self.providers}
        prefix, native = split_prefix(name, [*prefixes, *RESERVED_PREFIXES])
        if prefix is not None:
            provider = prefixes.get(prefix)
            if provider is None:
                raise self.not_found(name, f"Provider {prefix.rstrip('/')} is not configured, so {name} cannot be used")
            return ResolvedModel(provider, native, provider.prefix + native)
        known = [m for m in self._known() if m.native_name == name and m.provider in self._providers]
        known.sort(key=lambda m: m.provider != self.bare_provider)
        if known:
            provider = self._providers[known[0].provider]
            return ResolvedModel(provider, name, known[0].name)
        bare = self._providers.get(self.bare_provider)
        if bare is None:
            raise self.not_found(name)
        return ResolvedModel(bare, name, bare.prefix + name)

    def suggestions(self, model_name: str) -> list[str]:
        return closest_names(model_name, [m.name for m in self._known()])

    def not_found(self, model_name: str, message: str | None = None) -> ServiceError:
        suggestions = self.suggestions(model_name)
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        return ServiceError(
            ErrorCode.MODEL_NOT_FOUND,
            (message or f"Model {model_name} is not available") + "." + hint,
            details={"model": model_name, "suggestions": suggestions},
        )

    # -- chat ------------------------------------------------------------------------------------------

    async def candidates(self, model_name: str) -> list[Candidate]:
        """The requested model and then each fallback, routed once and with the catalog's info.

        A name that does not route is kept with its error (`open_chat_stream` raises the requested one's,
        after the turn has saved the user's message); a fallback that leads to a model already listed is
        left out.
        """
        found: list[Candidate] = []
        seen: set[str] = set()
        for name in [model_name, *self.fallback_models]:
            try:
                resolved = self.resolve(name)
            except ServiceError as exc:
                found.append(Candidate(name, None, error=exc))
                continue
            if resolved.name in seen:
                continue
            seen.add(resolved.name)
            found.append(await self._candidate(name, resolved))
        return found

    async def _candidate(self, asked: str, resolved: ResolvedModel) -> Candidate:
        counter = await resolved.provider.token_counter(resolved.native_name)
        return Candidate(asked, resolved, await self._info(resolved), counter)

    async def open_chat_stream(self, candidates: Sequence[Candidate]) -> RoutedStream:
        """Open a reply from the first candidate, or from the next ones when it cannot start (see module doc).

        The first chunk has already arrived when this returns; nothing falls back after it.
        """
        first_error: ServiceError | None = None
        attempts: list[dict[str, str]] = []
        asked = candidates[0].asked
        for index, candidate in enumerate(candidates):
            is_fallback = index > 0
            try:
                if candidate.error is not None:
                    raise candidate.error
                assert candidate.resolved is not None
                assert candidate.request is not None
                stream = await self._open_with_retries(candidate.resolved, candidate.request)
            except ServiceError as exc:
                if not is_fallback:
                    if exc.code not in FALLBACK_ON or len(candidates) == 1:
                        raise
                    first_error = exc
                attempts.append({"model": candidate.asked, "code": str(exc.code), "message": exc.message})
                log.warning("model %s could not start a reply: %s %s", candidate.asked, exc.code, exc.message)
                continue
            if is_fallback:
                stream.fallback_from = asked
                log.info("model %s answered instead of %s", stream.model, asked)
            return stream
        assert first_error is not None
        first_error.details = {**first_error.details, "attempts": attempts}
        raise first_error

    async def _open_with_retries(self, resolved: ResolvedModel, request: ChatRequest) -> RoutedStream:
        """`_open`, tried again with exponential backoff on transient errors (never once the circuit is open)."""
        for attempt in range(self.retries + 1):
            try:
                return await self._open(resolved, request)
            except ServiceError as exc:
                transient = exc.code in RETRY_ON and "circuit" not in exc.details
                if not transient or attempt == self.retries:
                    raise
                delay = self.retry_backoff_s * 2**attempt
                log.info("retrying %s in %.2fs after %s: %s", resolved.name, delay, exc.code, exc.message)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _open(self, resolved: ResolvedModel, request: ChatRequest) -> RoutedStream:
        """Check the circuit, start the provider's stream and wait for its first chunk."""
        provider = resolved.provider
        breaker = self.breaker(provider.name)
        breaker.check()
        chunks: AsyncIterator[ChatChunk] = provider.stream_chat(request)
        try:
            first = await anext(chunks)
        except BaseException as exc:
            await _close_quietly(chunks)
            error = self._as_service_error(exc, resolved)
            if error is None:  # cancelled: neither success nor failure
                breaker.release()
                raise
            breaker.record(error)
            raise error from (None if error is exc else exc)
        breaker.record_success()
        return RoutedStream(
            provider=provider.name,
            model=resolved.name,
            native_name=resolved.native_name,
            first=first,
            rest=chunks,
            breaker=breaker,
        )

    def _as_service_error(self, exc: BaseException, resolved: ResolvedModel) -> ServiceError | None:
        if isinstance(exc, ServiceError):
            if exc.code == ErrorCode.MODEL_NOT_FOUND and "suggestions" not in exc.details:
                exc.details = {**exc.details, "suggestions": self.suggestions(resolved.name)}
            return exc
        if isinstance(exc, StopAsyncIteration):
            return ServiceError(
                ErrorCode.GENERATION_FAILED,
                f"{resolved.name} ended its reply without any output",
                details={"provider": resolved.provider.name, "model": resolved.name},
            )
        if isinstance(exc, Exception):
            log.error("provider %s failed to start a reply", resolved.provider.name, exc_info=exc)
            return ServiceError(
                ErrorCode.GENERATION_FAILED,
                f"{resolved.name} failed to start the reply",
                details={"provider": resolved.provider.name, "model": resolved.name},
            )
        return None


async def _close_quietly(chunks: AsyncIterator[ChatChunk]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:
        log.debug("closing a failed provider stream raised", exc_info=True)
