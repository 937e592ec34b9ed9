"""Each candidate of a turn is routed once and gets its own request, built once: the provider's own model
name, the history fitted to that model's window, and no second deadline (the turn keeps the only one)."""

from __future__ import annotations

import pytest

from app.config.effective import build
from app.config.settings import Settings
from app.config.snapshot import ConfigSource
from app.errors import ErrorCode, ServiceError
from app.providers.registry import ProviderRegistry, ResolvedModel
from app.providers.types import ChatMessage, GenerationOptions, ModelInfo
from app.services.turn_request import TurnRequests
from tests.fixtures.providers import ScriptedProvider, registry_with

pytestmark = pytest.mark.anyio


async def routed(fallbacks: list[str], contexts: dict[str, int]) -> ProviderRegistry:
    registry = registry_with(fallback_models=tuple(fallbacks))
    providers = (ScriptedProvider("ollama", ["llama3.1:8b"]), ScriptedProvider("hf", ["tiny", "small"]))
    for provider in providers:
        registry.register(provider)
    listed = [
        ModelInfo(name=p.prefix + m, provider=p.name, native_name=m, context_length=contexts.get(p.prefix + m))
        for p in providers
        for m in p.models
    ]

    async def info(resolved: ResolvedModel) -> ModelInfo | None:
        return next((m for m in listed if m.name == resolved.name), None)

    registry.use_catalog(lambda: listed, info)
    return registry


async def test_each_candidate_gets_its_own_request_with_its_native_name_and_no_second_deadline() -> None:
    registry = await routed(["hf/tiny"], {"ollama/llama3.1:8b": 8192, "hf/tiny": 2048})
    requests = TurnRequests(ConfigSource.of(Settings()))
    built = requests.for_candidates(
        await registry.candidates("llama3.1:8b"), [], ChatMessage(role="user", content="hi")
    )
    assert [(c.request.model, c.request.options.context_length) for c in built if c.request] == [
        ("llama3.1:8b", 8192),
        ("tiny", 2048),
    ]
    assert [c.request.timeout_s for c in built if c.request] == [None, None]


async def test_a_disabled_requested_model_is_refused_and_a_disabled_fallback_is_a_failed_attempt() -> None:
    registry = await routed(["hf/tiny", "hf/small"], {})
    config = ConfigSource(build(Settings(), {"models": {"hf/tiny": {"enabled": False}}}, {}))
    requests = TurnRequests(config)
    current = ChatMessage(role="user", content="hi")
    built = requests.for_candidates(await registry.candidates("llama3.1:8b"), [], current)
    assert [(c.asked, c.error.code if c.error else None) for c in built] == [
        ("llama3.1:8b", None),
        ("hf/tiny", ErrorCode.MODEL_NOT_FOUND),
        ("hf/small", None),
    ]
    with pytest.raises(ServiceError) as caught:
        requests.for_candidates(await registry.candidates("hf/tiny"), [], current)
    assert caught.value.details["reason"] == "disabled"


async def test_the_request_options_go_over_the_model_configuration_one_by_one() -> None:
    registry = await routed([], {"hf/tiny": 2048})
    configured = {"options": {"temperature": 0.2, "top_k": 5, "max_tokens": 10, "stop": ["END"]}}
    requests = TurnRequests(ConfigSource(build(Settings(), {"models": {"hf/tiny": configured}}, {})))
    current = ChatMessage(role="user", content="hi")
    asked = GenerationOptions(temperature=1.0, seed=3)
    [built] = requests.for_candidates(await registry.candidates("hf/tiny"), [], current, asked)
    assert built.request is not None
    options = built.request.options
    assert (options.temperature, options.seed, options.top_k, options.max_tokens, options.stop) == (
        1.0,
        3,
        5,
        10,
        ["END"],
    )
    assert options.top_p is None  # left to the model's own defaults, then the service's
    stops = GenerationOptions(stop=["\n\n"], max_tokens=4)
    [built] = requests.for_candidates(await registry.candidates("hf/tiny"), [], current, stops)
    assert built.request is not None
    assert (built.request.options.stop, built.request.options.max_tokens) == (["\n\n"], 4)
