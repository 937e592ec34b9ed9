"""Routing (prefix, bare name -> catalog -> Ollama), suggestions, circuit use, and fallback before the first token."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.config.effective import build
from app.config.settings import Settings
from app.config.snapshot import ConfigSource
from app.errors import ErrorCode, ServiceError
from app.providers.registry import Candidate, ProviderRegistry, ResolvedModel
from app.providers.types import ChatMessage, ChatRequest, GenerationOptions, ModelInfo
from tests.fixtures.providers import ScriptedProvider, registry_with, unavailable

pytestmark = pytest.mark.anyio


def make_registry(**kwargs: object) -> tuple[ProviderRegistry, ScriptedProvider, ScriptedProvider]:
    registry = registry_with(**kwargs)
    ollama = ScriptedProvider("ollama", ["llama3.1:8b", "library/qwen:7b"], reply=("From", " ollama"))
    hf = ScriptedProvider("hf", ["SmolLM2-135M-Instruct", "tiny"], reply=("From", " hf"))
    registry.register(ollama)
    registry.register(hf)
    known = [ModelInfo(name=p.prefix + m, provider=p.name, native_name=m) for p in (ollama, hf) for m in p.models]
    registry.use_catalog(lambda: known)
    return registry, ollama, hf


def request(model: str = "ignored", context_length: int | None = 4096) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[ChatMessage(role="user", content="hi")],
        options=GenerationOptions(context_length=context_length),
    )


async def routed(
    registry: ProviderRegistry, name: str, build: Callable[[Candidate], ChatRequest] = lambda _c: request()
) -> list[Candidate]:
    """Each routed candidate of `name` with the request `build` makes for it, as a chat turn does; a
    ServiceError from `build` stays on the candidate."""
    built = []
    for candidate in await registry.candidates(name):
        if candidate.error is not None:
            built.append(candidate)
            continue
        try:
            built.append(candidate.sending(build(candidate)))
        except ServiceError as exc:
            built.append(candidate.failing(exc))
    return built


@pytest.mark.parametrize(
    ("name", "provider", "native", "full"),
    [
        ("hf/SmolLM2-135M-Instruct", "hf", "SmolLM2-135M-Instruct", "hf/SmolLM2-135M-Instruct"),
        ("ollama/llama3.1:8b", "ollama", "llama3.1:8b", "ollama/llama3.1:8b"),
        ("llama3.1:8b", "ollama", "llama3.1:8b", "ollama/llama3.1:8b"),  # bare: catalog, Ollama
        ("SmolLM2-135M-Instruct", "hf", "SmolLM2-135M-Instruct", "hf/SmolLM2-135M-Instruct"),  # bare: catalog, hf
        ("library/qwen:7b", "ollama", "library/qwen:7b", "ollama/library/qwen:7b"),  # a slash is not a prefix
        ("mistral:7b", "ollama", "mistral:7b", "ollama/mistral:7b"),  # unknown bare names go to Ollama
        ("  hf/tiny ", "hf", "tiny", "hf/tiny"),
        ("hf/not-exported", "hf", "not-exported", "hf/not-exported"),  # the provider decides what it has
    ],
)
def test_routing_table(name: str, provider: str, native: str, full: str) -> None:
    registry, *_ = make_registry()
    resolved = registry.resolve(name)
    assert (resolved.provider.name, resolved.native_name, resolved.name) == (provider, native, full)


def test_an_unconfigured_reserved_prefix_is_not_found_with_suggestions() -> None:
    registry, *_ = make_registry()
    with pytest.raises(ServiceError) as caught:
        registry.resolve("openai/gpt-4o")
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND
    assert "not configured" in caught.value.message


def test_without_ollama_an_unknown_bare_name_lists_the_closest_names() -> None:
    registry, *_ = make_registry()
    registry.unregister("ollama")
    with pytest.raises(ServiceError) as caught:
        registry.resolve("smollm2")
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND
    assert caught.value.details["suggestions"][0] == "hf/SmolLM2-135M-Instruct"
    assert "Did you mean" in caught.value.message


def test_an_empty_name_is_invalid() -> None:
    registry, *_ = make_registry()
    with pytest.raises(ServiceError) as caught:
        registry.resolve("  ")
    assert caught.value.code == ErrorCode.INVALID_REQUEST


async def test_candidates_are_routed_once_with_their_info_and_without_repeats() -> None:
    registry, ollama, hf = make_registry(fallback_models=("hf/tiny", "openai/gpt-4o", "tiny"))
    listed = [ModelInfo(name=p.prefix + m, provider=p.name, native_name=m) for p in (ollama, hf) for m in p.models]
    infos = {m.name: m for m in listed}
    looked_up: list[str] = []

    async def info(resolved: ResolvedModel) -> ModelInfo | None:
        looked_up.append(resolved.name)
        return infos.get(resolved.name)

    registry.use_catalog(lambda: list(infos.values()), info)
    candidates = await registry.candidates("llama3.1:8b")
    assert [(c.asked, c.resolved.name if c.resolved else None) for c in candidates] == [
        ("llama3.1:8b", "ollama/llama3.1:8b"),
        ("hf/tiny", "hf/tiny"),
        ("openai/gpt-4o", None),  # does not route: kept as a failed attempt; "tiny" is hf/tiny again
    ]
    assert [c.info.name if c.info else None for c in candidates] == ["ollama/llama3.1:8b", "hf/tiny", None]
    assert candidates[2].error is not None
    assert candidates[2].error.code == ErrorCode.MODEL_NOT_FOUND
    assert looked_up == ["ollama/llama3.1:8b", "hf/tiny"]


async def test_a_requested_name_that_does_not_route_fails_when_opened() -> None:
    registry, *_ = make_registry(fallback_models=("hf/tiny",))
    with pytest.raises(ServiceError) as caught:
        await registry.open_chat_stream(await routed(registry, "openai/gpt-4o"))
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND


async def test_open_chat_stream_pulls_the_first_chunk_and_sets_the_native_name() -> None:
    registry, _, hf = make_registry()
    stream = await registry.open_chat_stream(await routed(registry, "hf/tiny"))
    assert hf.requests[-1].model == "tiny"
    assert (stream.provider, stream.model, stream.native_name, stream.fallback_from) == ("hf", "hf/tiny", "tiny", None)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.text for c in chunks) == "From hf"
    assert chunks[-1].done


async def test_provider_not_found_gets_suggestions() -> None:
    registry, *_ = make_registry()
    with pytest.raises(ServiceError) as caught:
        await registry.open_chat_stream(await routed(registry, "hf/tiy"))
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND
    assert "hf/tiny" in caught.value.details["suggestions"]


async def test_falls_back_before_the_first_token_and_says_who_answered() -> None:
    registry, ollama, hf = make_registry(fallback_models=("hf/nope", "hf/tiny"))
    ollama.fail_before_first = unavailable("ollama")
    asked: list[str] = []
    contexts = {"llama3.1:8b": 131072, "hf/nope": 2048, "hf/tiny": 512}

    def build(candidate: Candidate) -> ChatRequest:
        asked.append(candidate.asked)
        return request(context_length=contexts[candidate.asked])

    stream = await registry.open_chat_stream(await routed(registry, "llama3.1:8b", build))
    assert (stream.model, stream.provider, stream.fallback_from) == ("hf/tiny", "hf", "llama3.1:8b")
    assert "".join([c.text async for c in stream]) == "From hf"
    assert asked == ["llama3.1:8b", "hf/nope", "hf/tiny"]  # each candidate gets a request fitted to it
    assert [(r.model, r.options.context_length) for r in hf.requests] == [("nope", 2048), ("tiny", 512)]


async def test_a_fallback_whose_request_cannot_be_built_is_skipped_as_an_attempt() -> None:
    registry, ollama, hf = make_registry(fallback_models=("hf/SmolLM2-135M-Instruct", "hf/tiny"))
    ollama.fail_before_first = unavailable("ollama")

    def build(candidate: Candidate) -> ChatRequest:
        if candidate.asked == "hf/SmolLM2-135M-Instruct":
            raise ServiceError(ErrorCode.CONTEXT_LENGTH_EXCEEDED, "too long for this one")
        return request()

    stream = await registry.open_chat_stream(await routed(registry, "llama3.1:8b", build))
    assert stream.model == "hf/tiny"
    assert [r.model for r in hf.requests] == ["tiny"]  # the one that could not fit was never sent anything


async def test_no_fallback_for_client_errors() -> None:
    registry, _, hf = make_registry(fallback_models=("hf/tiny",))
    with pytest.raises(ServiceError) as caught:
        await registry.open_chat_stream(await routed(registry, "hf/typo"))
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND
    assert [r.model for r in hf.requests] == ["typo"]


async def test_no_fallback_after_the_first_token() -> None:
    registry, ollama, hf = make_registry(fallback_models=("hf/tiny",))
    ollama.fail_after_first = unavailable("ollama")
    stream = await registry.open_chat_stream(await routed(registry, "llama3.1:8b"))
    assert (await anext(stream)).text == "From"
    with pytest.raises(ServiceError) as caught:
        await anext(stream)
    assert caught.value.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert hf.requests == []
    assert registry.breaker("ollama").snapshot().consecutive_failures == 1


async def test_when_every_candidate_fails_the_first_error_lists_the_attempts() -> None:
    registry, ollama, hf = make_registry(fallback_models=("hf/tiny",))
    ollama.fail_before_first = unavailable("ollama")
    hf.fail_before_first = ServiceError(ErrorCode.MEMORY_EXCEEDED, "too big")
    with pytest.raises(ServiceError) as caught:
        await registry.open_chat_stream(await routed(registry, "llama3.1:8b"))
    assert caught.value.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert [a["model"] for a in caught.value.details["attempts"]] == ["llama3.1:8b", "hf/tiny"]


async def test_an_open_circuit_skips_the_provider_and_falls_back() -> None:
    registry, ollama, _hf = make_registry(fallback_models=("hf/tiny",), failure_threshold=2, cooldown_s=60)
    ollama.fail_before_first = unavailable("ollama")
    for _ in range(2):
        await (await registry.open_chat_stream(await routed(registry, "llama3.1:8b"))).aclose()
    assert registry.breaker("ollama").state == "open"
    calls = len(ollama.requests)
    stream = await registry.open_chat_stream(await routed(registry, "llama3.1:8b"))
    assert stream.model == "hf/tiny"
    assert len(ollama.requests) == calls  # not even tried


async def test_closing_the_routed_stream_closes_the_provider_stream() -> None:
    registry, _, hf = make_registry()
    stream = await registry.open_chat_stream(await routed(registry, "hf/tiny"))
    await anext(stream)
    await stream.aclose()
    assert hf.closed == 1


class Flaky(ScriptedProvider):
    """Unavailable for the first `failures` attempts, then fine."""

    def __init__(self, failures: int) -> None:
        super().__init__("ollama", ["llama3.1:8b"])
        self.failures = failures

    def stream_chat(self, request: ChatRequest):
        self.fail_before_first = unavailable("ollama") if self.failures > 0 else None
        self.failures -= 1
        return super().stream_chat(request)


async def test_transient_errors_are_retried_with_backoff_before_any_fallback() -> None:
    registry = registry_with(provider_retries=2, provider_retry_backoff_s=0.01, fallback_models=("hf/tiny",))
    flaky = Flaky(failures=2)
    hf = ScriptedProvider("hf", ["tiny"])
    registry.register(flaky)
    registry.register(hf)
    stream = await registry.open_chat_stream(await routed(registry, "ollama/llama3.1:8b"))
    assert stream.model == "ollama/llama3.1:8b"
    assert stream.fallback_from is None
    assert len(flaky.requests) == 3
    assert hf.requests == []
    await stream.aclose()


async def test_retries_give_up_and_then_fall_back() -> None:
    registry = registry_with(provider_retries=1, provider_retry_backoff_s=0.01, fallback_models=("hf/tiny",))
    flaky = Flaky(failures=5)
    hf = ScriptedProvider("hf", ["tiny"])
    registry.register(flaky)
    registry.register(hf)
    stream = await registry.open_chat_stream(await routed(registry, "ollama/llama3.1:8b"))
    assert stream.model == "hf/tiny"
    assert len(flaky.requests) == 2
    await stream.aclose()


async def test_a_published_change_of_fallbacks_and_retries_reaches_the_running_registry() -> None:
    config = ConfigSource(build(Settings(), {"provider_retries": 0, "provider_retry_backoff_s": 0.01}, {}))
    registry = ProviderRegistry(config)
    flaky = Flaky(failures=100)
    hf = ScriptedProvider("hf", ["tiny"])
    registry.register(flaky)
    registry.register(hf)
    with pytest.raises(ServiceError) as caught:  # no retry, no fallback
        await registry.open_chat_stream(await routed(registry, "ollama/llama3.1:8b"))
    assert caught.value.code == ErrorCode.PROVIDER_UNAVAILABLE
    assert len(flaky.requests) == 1

    file = {"provider_retries": 2, "provider_retry_backoff_s": 0.01, "fallback_models": ["hf/tiny"]}
    config.publish(build(Settings(), file, {}))
    stream = await registry.open_chat_stream(await routed(registry, "ollama/llama3.1:8b"))
    assert (stream.model, stream.fallback_from) == ("hf/tiny", "ollama/llama3.1:8b")
    assert len(flaky.requests) == 1 + 3  # the first try and two retries, then the fallback
    await stream.aclose()


async def test_client_errors_are_not_retried() -> None:
    registry, ollama, _ = make_registry(provider_retries=3, provider_retry_backoff_s=0.01)
    ollama.fail_before_first = ServiceError(ErrorCode.INVALID_REQUEST, "bad")
    with pytest.raises(ServiceError):
        await registry.open_chat_stream(await routed(registry, "ollama/llama3.1:8b"))
    assert len(ollama.requests) == 1
