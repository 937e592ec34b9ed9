"""`ModelPool`: shared loads, leases, LRU eviction under the budget, refusals, idle unload, preload, unload."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from inference import BatchLimits, ExportInfo, InferenceError, PoolEvent, PoolSettings, RuntimeOptions
from inference.pool import ModelPool
from tests.fixtures.polling import wait_until_async

pytestmark = pytest.mark.anyio
SIZE = 100  # bytes of each fake export's graph; they have no layers, so no KV estimate


class FakeModel:
    """Stands in for a ChatModel: the pool only needs `provider`, `set_limits`, the batch counts and `close`."""

    provider = "CPUExecutionProvider"

    def __init__(self, alias: str, options: RuntimeOptions) -> None:
        self.alias = alias
        self.options = options
        self.closed = False

    running = 0
    queued = 0
    saved_bytes = 0
    limits: BatchLimits | None = None
    on_admitted = None

    def set_limits(self, limits: BatchLimits) -> None:
        self.limits = limits

    def drop_saved(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


class Loader:
    """Counts loads and keeps every model it made; each load takes a moment, like a real one."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.models: dict[str, FakeModel] = {}
        self._lock = threading.Lock()

    def __call__(self, info: ExportInfo, options: RuntimeOptions) -> FakeModel:
        with self._lock:
            self.calls.append(info.alias)
        time.sleep(0.05)
        model = self.models[info.alias] = FakeModel(info.alias, options)
        return model


def _fake_exports(root: Path, *aliases: str, size: int = SIZE) -> Path:
    for alias in aliases:
        folder = root / alias
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"\0" * size)
        (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 0}))
    return root


def _pool(root: Path, loader: Loader, **settings: object) -> ModelPool:
    return ModelPool(root, PoolSettings(keep_alive_s=None, **settings), loader=loader)  # type: ignore[arg-type]


async def test_concurrent_callers_share_one_load(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "a"), loader)
    models = await asyncio.gather(*(pool.acquire("a") for _ in range(5)))
    assert loader.calls == ["a"]
    assert len({id(model) for model in models}) == 1
    assert pool.loaded()[0].leases == 5


async def test_a_model_in_use_is_never_unloaded(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "a"), loader)
    async with pool.lease("a"):
        assert await pool.unload("a")
        assert not loader.models["a"].closed  # unloaded only when the lease ends
    assert loader.models["a"].closed
    assert pool.loaded() == []


async def test_least_recently_used_idle_model_is_evicted_for_a_new_one(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "a", "b", "c"), loader, memory_budget_bytes=2 * SIZE + SIZE // 2)
    for alias in ("a", "b", "a"):
        async with pool.lease(alias):
            pass
    async with pool.lease("c"):
        assert sorted(m.alias for m in pool.loaded()) == ["a", "c"]
    assert loader.models["b"].closed
    assert not loader.models["a"].closed


async def test_models_in_use_are_not_evicted_and_the_newcomer_is_refused(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "a", "b", "c"), loader, memory_budget_bytes=2 * SIZE)
    async with pool.lease("a"), pool.lease("b"):
        with pytest.raises(InferenceError) as caught:
            await pool.acquire("c")
    assert caught.value.generic_code == "MEMORY_EXCEEDED"
    assert loader.calls == ["a", "b"]
    assert not loader.models["a"].closed
    assert not loader.models["b"].closed


async def test_a_model_larger_than_the_budget_is_refused_without_loading(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "big", size=3 * SIZE), loader, memory_budget_bytes=2 * SIZE)
    with pytest.raises(InferenceError) as caught:
        await pool.acquire("big")
    assert caught.value.generic_code == "MEMORY_EXCEEDED"
    assert caught.value.details["needed_bytes"] == 3 * SIZE
    assert loader.calls == []


def test_the_size_estimate_counts_a_full_context_kv_cache(tiny_export: Path) -> None:
    pool = ModelPool(tiny_export.parent)
    info = pool.info(tiny_export.name)
    kv_per_token = 2 * 2 * 2 * 16 * 4  # key+value, 2 layers, 2 KV heads, head size 16, float32
    assert info.kv_bytes_per_token == kv_per_token
    assert info.estimated_bytes() == info.weights_bytes + 512 * kv_per_token


async def test_idle_models_are_unloaded_after_the_keep_alive(tmp_path: Path) -> None:
    loader = Loader()
    pool = ModelPool(_fake_exports(tmp_path, "a", "b"), PoolSettings(keep_alive_s=0.05), loader=loader)  # type: ignore[arg-type]
    await pool.start()
    try:
        async with pool.lease("a"):
            await asyncio.sleep(0.3)  # in use: the sweeper leaves it alone
            assert not loader.models["a"].closed

        async def closed() -> bool:
            return loader.models["a"].closed

        await wait_until_async(closed, within_s=2, interval=0.01, what="the idle model to be unloaded")
        assert pool.loaded() == []
    finally:
        await pool.close()


async def test_preloaded_models_load_at_start_and_stay(tmp_path: Path) -> None:
    loader = Loader()
    pool = ModelPool(
        _fake_exports(tmp_path, "a", "b"),
        PoolSettings(keep_alive_s=0.01, preload=("a",)),
        loader=loader,  # type: ignore[arg-type]
    )
    await pool.start()
    try:
        assert loader.calls == ["a"]
        await asyncio.sleep(0.05)
        assert await pool.unload_idle() == []
        assert [m.alias for m in pool.loaded()] == ["a"]
    finally:
        await pool.close()
    assert loader.models["a"].closed


async def test_explicit_unload(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "a"), loader)
    async with pool.lease("a"):
        pass
    assert await pool.unload("a")
    assert loader.models["a"].closed
    assert not await pool.unload("a")


async def test_an_unknown_model_is_not_found(tmp_path: Path) -> None:
    pool = _pool(_fake_exports(tmp_path, "a"), Loader())
    for alias in ("missing", "../a"):
        with pytest.raises(InferenceError) as caught:
            await pool.acquire(alias)
        assert caught.value.generic_code == "MODEL_NOT_FOUND"


async def test_a_broken_export_fails_to_load_with_the_reason(tmp_path: Path, tiny_export: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_export, broken)
    (broken / "model.onnx").write_bytes(b"this is not an onnx graph")
    pool = ModelPool(tmp_path, PoolSettings(execution_provider="cpu", keep_alive_s=None))
    with pytest.raises(InferenceError) as caught:
        await pool.acquire("broken")
    assert caught.value.generic_code == "MODEL_LOAD_FAILED"
    assert "model.onnx" in caught.value.message
    assert pool.loaded() == []
    assert pool.used_bytes == 0


async def test_real_models_load_and_chat_through_the_pool(tiny_export: Path) -> None:
    from inference import GenerationParams

    pool = ModelPool(tiny_export.parent, PoolSettings(execution_provider="cpu", num_threads=1, keep_alive_s=None))
    async with pool:
        async with pool.lease(tiny_export.name) as model:
            result = model.generate_chat([{"role": "user", "content": "hi"}], GenerationParams(max_new_tokens=4))
        assert result.usage.completion_tokens <= 4
        assert pool.loaded()[0].provider == "CPUExecutionProvider"


async def test_the_model_count_limit_evicts_the_least_recently_used_idle_model(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "a", "b", "c"), loader, max_loaded_models=2)
    for alias in ("a", "b"):
        async with pool.lease(alias):
            pass
    async with pool.lease("c"):
        assert sorted(m.alias for m in pool.loaded()) == ["b", "c"]
        assert loader.models["a"].closed


async def test_a_full_pool_of_models_in_use_refuses_with_overloaded(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "a", "b"), loader, max_loaded_models=1)
    async with pool.lease("a"):
        with pytest.raises(InferenceError) as refused:
            await pool.acquire("b")
    assert refused.value.generic_code == "OVERLOADED"
    assert "HF_MAX_LOADED_MODELS" in refused.value.message
    assert loader.calls == ["a"]


async def test_reconfigure_applies_limits_options_and_preload_to_a_running_pool(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "a", "b", "c"), loader)
    async with pool.lease("a"):
        for alias in ("b", "c"):
            async with pool.lease(alias):
                pass
        old_b = loader.models["b"]
        await pool.reconfigure(dataclasses.replace(pool.settings, max_loaded_models=2))
        # over the new count: the least recently used idle model went, the one in use stayed
        assert old_b.closed
        assert sorted(m.alias for m in pool.loaded()) == ["a", "c"]

        await pool.reconfigure(dataclasses.replace(pool.settings, num_threads=1, preload=("b",)))
        new_options = RuntimeOptions(intra_op_num_threads=1)
        # new runtime options: idle models unloaded now, the one in use kept until its lease ends;
        # the new preload entry is loaded (with the new options) and pinned
        assert loader.models["c"].closed
        assert not loader.models["a"].closed
        assert pool.options == new_options
        assert loader.calls[-1] == "b"
        assert not loader.models["b"].closed
    assert loader.models["a"].closed
    assert [m.alias for m in pool.loaded()] == ["b"]


async def test_drafting_and_batch_changes_reach_loaded_models_without_reloading_them(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "a", "b"), loader)
    async with pool.lease("a"):
        async with pool.lease("b"):
            pass
        changed = dataclasses.replace(pool.settings, lookahead_tokens=0, max_batch_size=2, queue_length=3)
        await pool.reconfigure(changed)
        # the one in use and the idle one both stay loaded and take the new limits; drafting is read by
        # each generation from the settings
        assert loader.calls == ["a", "b"]
        assert [(m.closed, m.limits) for m in loader.models.values()] == [(False, changed.batch_limits)] * 2
    async with pool.lease("a") as model:
        assert model is loader.models["a"]
        assert loader.calls == ["a", "b"]


async def test_listeners_hear_loads_with_their_time_and_unloads_with_their_reason(tmp_path: Path) -> None:
    loader = Loader()
    pool = _pool(_fake_exports(tmp_path, "a", "b"), loader, max_loaded_models=1)
    events: list[PoolEvent] = []
    pool.listeners.append(events.append)
    pool.listeners.append(lambda event: 1 / 0)  # a broken listener is logged, never fatal
    async with pool.lease("a"):
        pass
    async with pool.lease("b"):
        pass
    await pool.unload("b")
    assert [(e.kind, e.alias, e.reason) for e in events] == [
        ("loaded", "a", None),
        ("unloaded", "a", "evicted"),
        ("loaded", "b", None),
        ("unloaded", "b", "requested"),
    ]
    assert all(e.seconds is not None and e.seconds >= 0.05 for e in events if e.kind == "loaded")
