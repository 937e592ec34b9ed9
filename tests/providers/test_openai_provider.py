"""The `openai` provider against an OpenAI-compatible server on loopback (real HTTP, server-sent events)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from app.config.load import load_settings
from app.config.settings import SettingsError
from app.config.snapshot import ConfigSource
from app.errors import ErrorCode, ServiceError
from app.providers.assembly import build_registry
from app.providers.openai import OpenAIProvider
from app.providers.types import ChatMessage, ChatRequest
from tests.fixtures.openai_upstream import MODELS, FakeOpenAI
from tests.fixtures.providers import ScriptedProvider, chat, collect, registry_with, sending

pytestmark = pytest.mark.anyio

KEY = "sk-test-0123456789"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 16).decode()


@pytest.fixture
async def openai(fake_openai: FakeOpenAI) -> AsyncIterator[OpenAIProvider]:
    fake_openai.api_key = KEY
    provider = OpenAIProvider(fake_openai.url, api_key=KEY, timeout_s=2.0)
    await provider.initialize()
    yield provider
    await provider.shutdown()


async def opened(base_url: str, **kwargs: object) -> OpenAIProvider:
    provider = OpenAIProvider(base_url, **kwargs)  # type: ignore[arg-type]
    await provider.initialize()
    return provider


async def failure(provider: OpenAIProvider, request: ChatRequest) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await collect(provider, request)
    return caught.value


async def test_lists_the_server_models_with_context_and_vision(openai: OpenAIProvider) -> None:
    models = {m.native_name: m for m in await openai.list_models()}
    assert set(models) == set(MODELS)
    model = models["chat-model"]
    assert (model.name, model.provider, model.display_name) == ("openai/chat-model", "openai", "chat-model")
    assert model.context_length == 32768  # vLLM's max_model_len
    assert model.metadata == {"ownedBy": "fake"}
    assert not model.capabilities.vision
    assert models["vision-model"].capabilities.vision
    assert (await openai.model_info("long")).context_length == 4096


async def test_streams_deltas_then_the_usage_the_server_reports(
    openai: OpenAIProvider, fake_openai: FakeOpenAI
) -> None:
    chunks = await collect(openai, chat("chat-model"))
    assert [c.text for c in chunks[:-1]] == ["Hello ", "from ", "chat-model!"]
    final = chunks[-1]
    assert final.done
    assert final.finish_reason == "stop"
    assert [c.done for c in chunks].count(True) == 1
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (21, 3)
    assert final.usage.time_to_first_token_ms is not None
    assert final.usage.duration_ms is not None
    body = fake_openai.chats()[-1]
    assert body["model"] == "chat-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert fake_openai.chat_headers()[-1]["authorization"] == f"Bearer {KEY}"


async def test_without_usage_the_deltas_are_counted(openai: OpenAIProvider) -> None:
    final = (await collect(openai, chat("no-usage")))[-1]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (None, 3)


async def test_a_reply_cut_by_the_length_cap_says_so(openai: OpenAIProvider) -> None:
    chunks = await collect(openai, chat("long", max_tokens=3))
    assert "".join(c.text for c in chunks) == "one two three "
    assert chunks[-1].finish_reason == "length"


async def test_sends_the_openai_options_only(openai: OpenAIProvider, fake_openai: FakeOpenAI) -> None:
    request = chat(
        "chat-model", temperature=0.2, top_p=0.9, max_tokens=64, seed=7, stop=["\n\n"], top_k=20, repetition_penalty=1.1
    )
    await collect(openai, request)
    body = fake_openai.chats()[-1]
    sent = {key: body[key] for key in body if key not in ("model", "messages", "stream", "stream_options")}
    assert sent == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "seed": 7, "stop": ["\n\n"]}
    await collect(openai, chat("chat-model"))
    assert set(fake_openai.chats()[-1]) == {"model", "messages", "stream", "stream_options"}


async def test_images_go_as_data_url_parts(openai: OpenAIProvider, fake_openai: FakeOpenAI) -> None:
    request = ChatRequest(
        model="vision-model", messages=[ChatMessage(role="user", content="What is this?", images=[PNG, JPEG])]
    )
    chunks = await collect(openai, request)
    assert "".join(c.text for c in chunks) == "I see 2 images: image/png, image/jpeg."
    content = fake_openai.chats()[-1]["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert content[2]["image_url"]["url"].startswith("data:image/jpeg;base64,")

    blind = ChatRequest(model="chat-model", messages=[ChatMessage(role="user", content="x", images=[PNG])])
    error = await failure(openai, blind)
    assert error.code == ErrorCode.CAPABILITY_UNSUPPORTED
    assert error.status == 400


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, ErrorCode.PROVIDER_UNAVAILABLE),
        (403, ErrorCode.PROVIDER_UNAVAILABLE),
        (429, ErrorCode.OVERLOADED),
        (503, ErrorCode.OVERLOADED),
        (500, ErrorCode.PROVIDER_UNAVAILABLE),
        (502, ErrorCode.PROVIDER_UNAVAILABLE),
        (400, ErrorCode.INVALID_REQUEST),
    ],
)
async def test_error_statuses_map_onto_the_error_set(
    openai: OpenAIProvider, fake_openai: FakeOpenAI, status: int, code: ErrorCode
) -> None:
    fake_openai.chat_status = status
    error = await failure(openai, chat("chat-model"))
    assert error.code == code
    assert error.details["upstreamStatus"] == status
    assert error.details["upstreamError"] == f"the server answers {status}"


async def test_an_unknown_model_is_model_not_found(openai: OpenAIProvider) -> None:
    error = await failure(openai, chat("nope"))
    assert error.code == ErrorCode.MODEL_NOT_FOUND
    assert "nope" in error.message
    assert "does not exist" in error.details["upstreamError"]


async def test_a_refused_key_is_provider_unavailable_and_never_quoted(fake_openai: FakeOpenAI) -> None:
    fake_openai.api_key = "sk-the-right-one"
    provider = await opened(fake_openai.url, api_key=KEY)
    try:
        error = await failure(provider, chat("chat-model"))
        assert error.code == ErrorCode.PROVIDER_UNAVAILABLE
        assert error.details["upstreamStatus"] == 401
        assert "refused the API key" in error.message
        assert KEY not in repr((error.message, error.details))
        assert "Incorrect API key provided: ***" in error.details["upstreamError"]  # the server quoted it
        with pytest.raises(ServiceError) as listing:
            await provider.list_models()
        assert listing.value.code == ErrorCode.PROVIDER_UNAVAILABLE
        health = await provider.health_check()
        assert health.status == "unhealthy"
        assert KEY not in health.detail
    finally:
        await provider.shutdown()


async def test_a_base_url_without_a_model_list_says_where_to_look(fake_openai: FakeOpenAI) -> None:
    provider = await opened(fake_openai.address)  # without /v1: every path is a 404
    try:
        with pytest.raises(ServiceError) as caught:
            await provider.list_models()
        assert caught.value.code == ErrorCode.PROVIDER_UNAVAILABLE
        assert "/v1 root" in caught.value.message
    finally:
        await provider.shutdown()


async def test_models_limits_what_is_listed_and_served(fake_openai: FakeOpenAI) -> None:
    provider = await opened(fake_openai.url, models=["chat-model", "long", "not-on-the-server"])
    try:
        assert sorted(m.native_name for m in await provider.list_models()) == ["chat-model", "long"]
        before = len(fake_openai.chats())
        error = await failure(provider, chat("no-usage"))
        assert error.code == ErrorCode.MODEL_NOT_FOUND
        assert len(fake_openai.chats()) == before  # refused here, never sent
        assert "".join(c.text for c in await collect(provider, chat("chat-model"))) == "Hello from chat-model!"
    finally:
        await provider.shutdown()


async def test_health_check_counts_the_models(openai: OpenAIProvider) -> None:
    health = await openai.health_check()
    assert health.status == "healthy"
    assert f"{len(MODELS)} models" in health.detail


async def test_a_busy_server_is_retried_before_any_fallback(fake_openai: FakeOpenAI) -> None:
    registry = registry_with(fallback_models=["hf/tiny"], provider_retries=2, provider_retry_backoff_s=0.01)
    registry.register(OpenAIProvider(fake_openai.url, timeout_s=2))
    registry.register(ScriptedProvider("hf", ["tiny"]))
    await registry.initialize()
    try:
        fake_openai.chat_status, fake_openai.fail_next = 503, 2
        stream = await registry.open_chat_stream(await sending(registry, "openai/chat-model", chat("ignored")))
        assert (stream.model, stream.fallback_from) == ("openai/chat-model", None)
        assert "".join([c.text async for c in stream]) == "Hello from chat-model!"
        assert len(fake_openai.chats()) == 3

        fake_openai.chat_status, fake_openai.fail_next = 429, None
        stream = await registry.open_chat_stream(await sending(registry, "openai/chat-model", chat("ignored")))
        assert (stream.model, stream.fallback_from) == ("hf/tiny", "openai/chat-model")
        await stream.aclose()
        assert len(fake_openai.chats()) == 6  # three more tries, then the fallback
    finally:
        await registry.shutdown()


async def test_openai_names_the_default_server_only_when_it_is_set(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = load_settings({"OLLAMA_ENABLED": "0"})
    unset = build_registry(start, ConfigSource.of(start))
    with pytest.raises(ServiceError) as caught:
        unset.resolve("openai/chat-model")
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND

    monkeypatch.setenv("UPSTREAM_KEY", KEY)
    fake_openai.api_key = KEY
    settings = load_settings(
        {"OPENAI_BASE_URL": fake_openai.url + "/", "OPENAI_API_KEY": "env:UPSTREAM_KEY", "OLLAMA_ENABLED": "0"}
    )
    assert (settings.openai_base_url, settings.openai_api_key) == (fake_openai.url, "env:UPSTREAM_KEY")
    assert "UPSTREAM_KEY" not in repr(settings)
    registry = build_registry(settings, ConfigSource.of(settings))
    assert [p.name for p in registry.providers] == ["openai", "hf"]
    resolved = registry.resolve("openai/chat-model")
    assert (resolved.provider.name, resolved.native_name) == ("openai", "chat-model")
    await registry.initialize()
    try:  # the key the reference names reaches the server as the bearer token
        assert "chat-model" in [m.native_name for m in await resolved.provider.list_models()]
    finally:
        await registry.shutdown()
    assert fake_openai.requests[-1].headers["authorization"] == f"Bearer {KEY}"

    with pytest.raises(SettingsError, match=r"OPENAI_API_KEY.*NOT_SET_ANYWHERE.*not set"):
        load_settings({"OPENAI_BASE_URL": "http://x/v1", "OPENAI_API_KEY": "env:NOT_SET_ANYWHERE"})
    with pytest.raises(SettingsError, match="OPENAI_BASE_URL"):
        load_settings({"OPENAI_BASE_URL": "localhost:8000"})
