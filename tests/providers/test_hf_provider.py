"""The `hf` provider on real exports: the tiny random Llama, and (slow) the default SmolLM2 model."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.errors import ErrorCode, ServiceError
from app.providers.hf import HFProvider
from app.providers.types import ChatChunk, ChatMessage, ChatRequest, GenerationOptions
from inference.params import GenerationParams
from inference.pool_settings import PoolSettings

pytestmark = pytest.mark.anyio


def copy_export(source: Path, models_dir: Path, alias: str) -> Path:
    """A copy of an export under another alias (the manifest's alias must match the folder)."""
    destination = models_dir / alias
    shutil.copytree(source, destination)
    manifest = json.loads((destination / "manifest.json").read_text())
    manifest["alias"] = alias
    (destination / "manifest.json").write_text(json.dumps(manifest))
    return destination


@pytest.fixture
def models_dir(tiny_export: Path, tmp_path: Path) -> Path:
    """`tiny`, a copy whose graph is corrupt (`tiny-corrupt`) and a folder with no manifest (`junk`)."""
    models = tmp_path / "models"
    models.mkdir()
    copy_export(tiny_export, models, "tiny")
    corrupt = copy_export(tiny_export, models, "tiny-corrupt")
    (corrupt / json.loads((corrupt / "manifest.json").read_text())["onnx_file"]).write_bytes(b"not an onnx graph")
    (models / "junk").mkdir()
    (models / "junk" / "manifest.json").write_text("{ not json")
    return models


@pytest.fixture
async def hf(models_dir: Path) -> AsyncIterator[HFProvider]:
    provider = HFProvider(
        models_dir, PoolSettings(execution_provider="cpu", num_threads=1, keep_alive_s=60), default_max_tokens=8
    )
    await provider.initialize()
    yield provider
    await provider.shutdown()


def chat(model: str, **options: object) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hello world!")],
        options=GenerationOptions(**options),
    )


async def collect(provider: HFProvider, request: ChatRequest) -> list[ChatChunk]:
    return [chunk async for chunk in provider.stream_chat(request)]


async def test_lists_exports_from_manifests_and_reports_broken_folders_only_in_health(hf: HFProvider) -> None:
    models = {m.name: m for m in await hf.list_models()}
    assert sorted(models) == ["hf/tiny", "hf/tiny-corrupt"]
    tiny = models["hf/tiny"]
    assert (tiny.provider, tiny.native_name, tiny.quantization) == ("hf", "tiny", "none")
    assert tiny.context_length == 512
    assert tiny.family == "llama"
    assert tiny.capabilities.text
    assert tiny.capabilities.streaming
    assert not tiny.capabilities.vision
    assert tiny.size_bytes
    assert tiny.size_bytes > 0
    assert not tiny.loaded
    health = await hf.health_check()
    assert health.status == "degraded"
    assert "junk" in health.detail


async def test_streams_text_then_a_final_chunk_with_usage(hf: HFProvider) -> None:
    chunks = await collect(hf, chat("tiny", temperature=0, max_tokens=6))
    final = chunks[-1]
    assert final.done
    assert final.finish_reason in ("stop", "length")
    assert final.usage is not None
    assert final.usage.prompt_tokens
    assert final.usage.prompt_tokens > 5
    assert 1 <= (final.usage.completion_tokens or 0) <= 6
    assert all(not c.done for c in chunks[:-1])
    assert (await hf.model_info("tiny")).loaded  # kept for the keep-alive


async def test_a_corrupt_export_fails_alone(hf: HFProvider) -> None:
    with pytest.raises(ServiceError) as caught:
        await collect(hf, chat("tiny-corrupt"))
    assert caught.value.code == ErrorCode.MODEL_LOAD_FAILED
    assert caught.value.details["hfCode"] == "HF_MODEL_LOAD_FAILED"
    assert (await collect(hf, chat("tiny", max_tokens=2)))[-1].done


async def test_errors_map_onto_the_error_set(hf: HFProvider) -> None:
    with pytest.raises(ServiceError) as missing:
        await collect(hf, chat("nope"))
    assert missing.value.code == ErrorCode.MODEL_NOT_FOUND
    with pytest.raises(ServiceError) as bad:
        await collect(hf, chat("tiny", top_p=0))
    assert bad.value.code == ErrorCode.INVALID_REQUEST
    assert bad.value.details["hfCode"] == "HF_CONFIGURATION_ERROR"
    images = ChatRequest(model="tiny", messages=[ChatMessage(role="user", content="x", images=["aGk="])])
    with pytest.raises(ServiceError) as vision:
        await collect(hf, images)
    assert vision.value.code == ErrorCode.CAPABILITY_UNSUPPORTED
    long_prompt = ChatRequest(model="tiny", messages=[ChatMessage(role="user", content="hello world " * 400)])
    with pytest.raises(ServiceError) as too_long:
        await collect(hf, long_prompt)
    assert too_long.value.code == ErrorCode.CONTEXT_LENGTH_EXCEEDED


async def test_a_model_with_a_full_batch_and_queue_answers_overloaded(models_dir: Path) -> None:
    settings = PoolSettings(execution_provider="cpu", num_threads=1, max_batch_size=1, queue_length=0)
    provider = HFProvider(models_dir, settings, default_max_tokens=8)
    await provider.initialize()
    gate = threading.Event()
    try:
        async with provider.pool.lease("tiny") as model:
            # a generation that holds the only place: its first events are not taken until the gate opens
            busy = model.start_chat([{"role": "user", "content": "hi"}], GenerationParams(max_new_tokens=4))
            model.scheduler.submit(busy, lambda _: gate.wait(30))
            with pytest.raises(ServiceError) as caught:
                await collect(provider, chat("tiny"))
            assert caught.value.code == ErrorCode.OVERLOADED
            assert caught.value.details["hfCode"] == "HF_OVERLOADED"
    finally:
        gate.set()
        await provider.shutdown()


async def test_load_unload_and_closing_a_stream_releases_the_model(hf: HFProvider) -> None:
    await hf.load("tiny")
    assert [m.alias for m in hf.pool.loaded()] == ["tiny"]
    stream = hf.stream_chat(chat("tiny", max_tokens=200, temperature=1.0, seed=1))
    await anext(stream)
    assert hf.pool.loaded()[0].leases == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert hf.pool.loaded()[0].leases == 0
    await hf.unload("tiny")
    assert hf.pool.loaded() == []
    with pytest.raises(ServiceError) as caught:
        await hf.unload("nope")
    assert caught.value.code == ErrorCode.MODEL_NOT_FOUND


@pytest.mark.slow
async def test_the_default_model_is_listed_and_answers(default_export: Path) -> None:
    provider = HFProvider(default_export.parent, PoolSettings(execution_provider="cpu"), default_max_tokens=16)
    await provider.initialize()
    try:
        models = {m.name: m for m in await provider.list_models()}
        smol = models["hf/SmolLM2-135M-Instruct"]
        assert smol.capabilities.text
        assert not smol.capabilities.vision
        assert smol.context_length
        assert smol.context_length >= 2048
        assert smol.parameter_size
        assert smol.parameter_size.endswith("M")
        chunks = await collect(provider, chat("SmolLM2-135M-Instruct", temperature=0, max_tokens=16))
        assert "".join(c.text for c in chunks).strip()
        assert chunks[-1].done
    finally:
        await provider.shutdown()
