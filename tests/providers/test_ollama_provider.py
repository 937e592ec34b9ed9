"""The `ollama` provider against an Ollama-protocol server on loopback (real HTTP, NDJSON)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.config.load import load_settings
from app.config.settings import SettingsError
from app.errors import ErrorCode, ServiceError
from app.providers.ollama import OllamaProvider
from app.providers.types import ChatMessage, ChatRequest, GenerationOptions
from tests.fixtures.ollama import MODELS, FakeOllama
from tests.fixtures.providers import chat, collect

pytestmark = pytest.mark.anyio


@pytest.fixture
async def ollama(fake_ollama: FakeOllama) -> AsyncIterator[OllamaProvider]:
    provider = OllamaProvider(fake_ollama.url, timeout_s=2.0, num_ctx=8192, keep_alive_s=600)
    await provider.initialize()
    yield provider
    await provider.shutdown()


async def test_lists_models_with_capabilities_context_and_loaded_state(
    ollama: OllamaProvider, fake_ollama: FakeOllama
) -> None:
    fake_ollama.loaded.add("llava:7b")
    models = {m.native_name: m for m in await ollama.list_models()}
    llama, llava = models["llama3.1:8b"], models["llava:7b"]
    assert llama.name == "ollama/llama3.1:8b"
    assert (llama.family, llama.parameter_size, llama.quantization) == ("llama", "8.0B", "Q4_K_M")
    assert llama.context_length == 8192  # capped by num_ctx; the model's own maximum is kept in metadata
    assert llama.metadata["maxContextLength"] == 131072
    assert llama.capabilities.vision is False
    assert llama.capabilities.text is True
    assert llava.capabilities.vision is True
    assert llava.context_length == 4096
    assert llava.loaded
    assert not llama.loaded
    assert llama.size_bytes == 4_000_000_000


async def test_show_is_cached_per_digest(ollama: OllamaProvider, fake_ollama: FakeOllama) -> None:
    await ollama.list_models()
    await ollama.list_models()
    shows = [r for r in fake_ollama.requests if r.path == "/api/show"]
    assert len(shows) == len(await ollama.list_models()) == len(MODELS)


async def test_streams_ndjson_chunks_then_final_usage(ollama: OllamaProvider) -> None:
    chunks = await collect(ollama, chat("llama3.1:8b"))
    assert "".join(c.text for c in chunks) == "Hello from llama3.1:8b!"
    final = chunks[-1]
    assert final.done
    assert final.finish_reason == "stop"
    assert [c.done for c in chunks].count(True) == 1
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (26, 3)
    assert final.usage.duration_ms == pytest.approx(1500)
    assert final.usage.tokens_per_second == pytest.approx(3.0)
    assert final.usage.time_to_first_token_ms is not None


async def test_sends_options_num_ctx_keep_alive_and_images(ollama: OllamaProvider, fake_ollama: FakeOllama) -> None:
    request = chat("llama3.1:8b", temperature=0.2, top_p=0.9, top_k=20, seed=7, max_tokens=64, stop=["\n\n"])
    await collect(ollama, request)
    body = fake_ollama.chats()[-1]
    assert body["stream"] is True
    assert body["keep_alive"] == 600
    assert body["options"] == {
        "num_ctx": 8192,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 20,
        "seed": 7,
        "num_predict": 64,
        "stop": ["\n\n"],
    }
    vision = ChatRequest(
        model="llava:7b",
        messages=[ChatMessage(role="user", content="What is this?", images=["aGVsbG8=", "d29ybGQ="])],
        options=GenerationOptions(context_length=2048),
    )
    chunks = await collect(ollama, vision)
    assert "".join(c.text for c in chunks) == "I see 2 images."
    body = fake_ollama.chats()[-1]
    assert body["messages"][0]["images"] == ["aGVsbG8=", "d29ybGQ="]
    assert body["options"]["num_ctx"] == 2048  # the request's context length wins


async def test_num_ctx_follows_a_small_model_context(ollama: OllamaProvider, fake_ollama: FakeOllama) -> None:
    await collect(ollama, ChatRequest(model="llava:7b", messages=[ChatMessage(role="user", content="x")]))
    assert fake_ollama.chats()[-1]["options"]["num_ctx"] == 4096


@pytest.mark.parametrize(
    ("mode", "model", "code"),
    [
        ("ok", "nope:latest", ErrorCode.MODEL_NOT_FOUND),
        ("busy", "llama3.1:8b", ErrorCode.OVERLOADED),
        ("broken", "llama3.1:8b", ErrorCode.MODEL_LOAD_FAILED),
    ],
)
async def test_error_statuses_map_onto_the_error_set(
    ollama: OllamaProvider, fake_ollama: FakeOllama, mode: str, model: str, code: ErrorCode
) -> None:
    fake_ollama.mode = mode
    with pytest.raises(ServiceError) as caught:
        await collect(ollama, chat(model))
    assert caught.value.code == code
    assert caught.value.details["upstreamError"]


async def test_a_400_is_a_client_error(ollama: OllamaProvider) -> None:
    request = ChatRequest(model="llama3.1:8b", messages=[ChatMessage(role="user", content="x", images=["aGk="])])
    with pytest.raises(ServiceError) as caught:
        await collect(ollama, request)
    assert caught.value.code == ErrorCode.CAPABILITY_UNSUPPORTED
    assert caught.value.status == 400


async def test_health_load_and_unload(ollama: OllamaProvider, fake_ollama: FakeOllama) -> None:
    health = await ollama.health_check()
    assert health.status == "healthy"
    assert "0.9.0-fake" in health.detail
    await ollama.load("llama3.1:8b")
    assert (await ollama.model_info("llama3.1:8b")).loaded
    loads = [r.body for r in fake_ollama.requests if r.path == "/api/chat" and r.body["messages"] == []]
    assert loads[-1]["keep_alive"] == 600
    await ollama.unload("llama3.1:8b")
    assert not (await ollama.model_info("llama3.1:8b")).loaded
    with pytest.raises(ServiceError) as caught:
        await ollama.model_info("nope")
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND


def test_settings_for_providers_and_routing() -> None:
    settings = load_settings({"FALLBACK_MODELS": "hf/SmolLM2-135M-Instruct, llama3.1:8b,,", "HF_PRELOAD": "tiny"})
    assert settings.fallback_models == ("hf/SmolLM2-135M-Instruct", "llama3.1:8b")
    assert settings.hf_preload == ("tiny",)
    assert (settings.circuit_failure_threshold, settings.catalog_ttl_s, settings.ollama_num_ctx) == (5, 30.0, 8192)
    with pytest.raises(SettingsError, match="CIRCUIT_FAILURE_THRESHOLD"):
        load_settings({"CIRCUIT_FAILURE_THRESHOLD": "0"})
