"""What every provider reached over HTTP does alike, against each one's fake server on loopback (real HTTP):
Ollama (NDJSON) and an OpenAI-compatible server (server-sent events). Closing a stream closes the upstream
request; a reply cut off or failing part-way is GENERATION_FAILED; a hanging model times out; a refused
connection is PROVIDER_UNAVAILABLE without the address; a hanging model falls back and a down server opens
its circuit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.errors import ErrorCode, ServiceError
from app.providers.http import HTTPProvider
from app.providers.ollama import OllamaProvider
from app.providers.openai import OpenAIProvider
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.openai_upstream import FakeOpenAI
from tests.fixtures.polling import wait_until_async
from tests.fixtures.providers import ScriptedProvider, chat, collect, registry_with, sending
from tests.fixtures.server import free_port

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Upstream:
    """One kind of HTTP provider with its fake server: how to build it and what its server's test models do."""

    server: FakeOllama | FakeOpenAI
    build: Callable[..., HTTPProvider]  # (base URL, **provider options)
    #: the models of the fake server that stream slowly, hang, drop the connection and fail part-way, and one
    #: that answers
    slow: str
    hang: str
    drop: str
    midfail: str
    answers: str
    #: the text a dropped reply got out, the deltas before a failing reply's error, and a word of that error
    dropped_text: str
    midfail_seen: list[str]
    midfail_says: str
    #: the code of a model that hangs before any text, and the words its message carries
    hang_code: ErrorCode
    hang_says: str
    #: the base URL of this kind on a port, and what a refused connection's message advises
    url_on: Callable[[int], str]
    refused_says: str
    #: the fallback and circuit test: the provider's name, how a client names its models there, registry options
    circuit_name: str = "b"
    circuit_prefix: str = "b/"
    registry_options: dict[str, Any] = field(default_factory=dict)


UPSTREAMS = ["ollama", "openai"]


@pytest.fixture(params=UPSTREAMS)
def upstream(request: pytest.FixtureRequest) -> Upstream:
    if request.param == "ollama":
        return Upstream(
            server=request.getfixturevalue("fake_ollama"),
            build=OllamaProvider,
            slow="slow:latest",
            hang="hang:latest",
            drop="drop:latest",
            midfail="midfail:latest",
            answers="llama3.1:8b",
            dropped_text="Half a reply",
            midfail_seen=["Starting "],
            midfail_says="CUDA error",
            hang_code=ErrorCode.TIMEOUT,  # Ollama's answer is late: the model may be loading
            hang_says="took too long",
            url_on=lambda port: f"http://127.0.0.1:{port}",
            refused_says="ollama serve",
            circuit_name="ollama",
            circuit_prefix="",  # bare names go to Ollama
        )
    return Upstream(
        server=request.getfixturevalue("fake_openai"),
        build=OpenAIProvider,
        slow="slow",
        hang="hang",
        drop="drop",
        midfail="midfail",
        answers="chat-model",
        dropped_text="Hello from ",
        midfail_seen=["Hello "],
        midfail_says="the engine crashed",
        hang_code=ErrorCode.PROVIDER_UNAVAILABLE,
        hang_says="took too long",
        url_on=lambda port: f"http://127.0.0.1:{port}/v1",
        refused_says="not reachable",
        registry_options={"provider_retries": 0},
    )


@pytest.fixture
async def provider(upstream: Upstream) -> AsyncIterator[HTTPProvider]:
    opened = upstream.build(upstream.server.url, timeout_s=2.0)
    await opened.initialize()
    yield opened
    await opened.shutdown()


async def disconnects_become(upstream: Upstream, models: list[str]) -> None:
    async def disconnected() -> list[str]:
        return upstream.server.disconnects

    assert await wait_until_async(disconnected, within_s=5) == models


async def test_closing_the_stream_closes_the_upstream_request(provider: HTTPProvider, upstream: Upstream) -> None:
    stream = provider.stream_chat(chat(upstream.slow))
    first = await anext(stream)
    assert first.text == "word0 "
    await stream.aclose()  # type: ignore[attr-defined]
    await disconnects_become(upstream, [upstream.slow])


async def test_an_error_in_the_middle_of_the_stream(provider: HTTPProvider, upstream: Upstream) -> None:
    seen: list[str] = []
    with pytest.raises(ServiceError) as caught:
        await collect(provider, chat(upstream.midfail), seen)
    assert seen == upstream.midfail_seen
    assert caught.value.code == ErrorCode.GENERATION_FAILED
    assert upstream.midfail_says in caught.value.message


async def test_a_dropped_connection_after_some_text(provider: HTTPProvider, upstream: Upstream) -> None:
    seen: list[str] = []
    with pytest.raises(ServiceError) as caught:
        await collect(provider, chat(upstream.drop), seen)
    assert "".join(seen) == upstream.dropped_text
    assert caught.value.code == ErrorCode.GENERATION_FAILED


async def test_a_model_that_hangs_times_out(upstream: Upstream) -> None:
    provider = upstream.build(upstream.server.url, timeout_s=0.5)
    await provider.initialize()
    try:
        with pytest.raises(ServiceError) as caught:
            await collect(provider, chat(upstream.hang))
    finally:
        await provider.shutdown()
    assert caught.value.code == upstream.hang_code
    assert upstream.hang_says in caught.value.message
    await disconnects_become(upstream, [upstream.hang])


async def test_connection_refused_is_provider_unavailable(upstream: Upstream) -> None:
    provider = upstream.build(upstream.url_on(free_port()), timeout_s=1)
    await provider.initialize()
    try:
        with pytest.raises(ServiceError) as caught:
            await collect(provider, chat(upstream.answers))
        assert caught.value.code == ErrorCode.PROVIDER_UNAVAILABLE
        assert "not reachable" in caught.value.message
        assert upstream.refused_says in caught.value.message
        assert "127.0.0.1" not in caught.value.message
        with pytest.raises(ServiceError) as listing:
            await provider.list_models()
        assert listing.value.code == ErrorCode.PROVIDER_UNAVAILABLE
        health = await provider.health_check()
        assert health.status == "unhealthy"
        assert "not reachable" in health.detail
    finally:
        await provider.shutdown()


async def test_a_hanging_model_falls_back_and_a_down_server_opens_its_circuit(upstream: Upstream) -> None:
    registry = registry_with(
        fallback_models=("hf/tiny",), failure_threshold=2, cooldown_s=60, **upstream.registry_options
    )
    registry.register(upstream.build(upstream.server.url, timeout_s=0.5, name=upstream.circuit_name))
    registry.register(ScriptedProvider("hf", ["tiny"]))
    await registry.initialize()
    try:
        hangs, answers = upstream.circuit_prefix + upstream.hang, upstream.circuit_prefix + upstream.answers
        stream = await registry.open_chat_stream(await sending(registry, hangs, chat("ignored")))
        assert (stream.model, stream.fallback_from) == ("hf/tiny", hangs)
        await stream.aclose()
        upstream.server.stop()
        await (await registry.open_chat_stream(await sending(registry, answers, chat("ignored")))).aclose()
        assert registry.breaker(upstream.circuit_name).state == "open"
        requests = len(upstream.server.requests)
        stream = await registry.open_chat_stream(await sending(registry, answers, chat("ignored")))
        assert stream.model == "hf/tiny"
        assert len(upstream.server.requests) == requests  # the open circuit sent nothing
    finally:
        await registry.shutdown()
