"""Prefix reuse: a conversation's next turn and a shared system prompt skip the tokens already computed, and the
text is the same as after a fresh prefill; saved prefixes are evicted least recently used within a budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference import BatchLimits, ChatModel, GenerationParams, GenerationResult, ModelPool, PoolSettings
from inference.prefix_cache import MIN_TOKENS, PrefixCache
from tests.inference.conftest import CPU_ONE_THREAD

pytestmark = pytest.mark.anyio
PARAMS = GenerationParams(max_new_tokens=20, temperature=0, stop_token_ids=(), lookahead_tokens=0)
SYSTEM = {"role": "system", "content": "You are a helpful assistant. Write a haiku about the sea, then stop."}


@pytest.fixture
def model(tiny_export: Path) -> Iterator[ChatModel]:
    loaded = ChatModel.load(tiny_export, CPU_ONE_THREAD)
    yield loaded
    loaded.close()


@pytest.fixture
def fed(model: ChatModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Tokens fed to each single-sequence step: the prompt (one piece: these prompts are short), then one token
    per decoding step."""
    counts: list[int] = []
    forward_rows = model.model.forward_rows

    def counting(slots: Any, first: int, token_ids: Any, lengths: Any, *args: Any) -> np.ndarray:
        if len(lengths) == 1:
            counts.append(len(token_ids[0]))
        return forward_rows(slots, first, token_ids, lengths, *args)

    monkeypatch.setattr(model.model, "forward_rows", counting)
    return counts


async def _reply(model: ChatModel, messages: list[dict[str, str]]) -> GenerationResult:
    result = None
    async for event in model.stream_chat(messages, PARAMS):
        result = event
    assert isinstance(result, GenerationResult)
    return result


async def test_the_next_turn_prefills_only_its_new_tokens_and_says_the_same(model: ChatModel, fed: list[int]) -> None:
    turn = [SYSTEM, {"role": "user", "content": "Hello world! How are you today?"}]
    first = await _reply(model, turn)
    turn = [*turn, {"role": "assistant", "content": first.text}, {"role": "user", "content": "And the fox?"}]
    fed.clear()
    second = await _reply(model, turn)
    prompt = model.count_chat_tokens(turn)
    assert second.usage.prompt_tokens == prompt
    assert fed[1:] == [1] * (len(second.token_ids) - 1)
    assert fed[0] <= prompt - first.usage.prompt_tokens  # at least the first turn's prompt came from the cache
    assert second.token_ids == model.generate_chat(turn, PARAMS).token_ids  # a fresh prefill says the same


async def test_a_system_prompt_is_computed_once_and_shared_by_new_conversations(
    model: ChatModel, fed: list[int]
) -> None:
    model.set_limits(BatchLimits(prefix_cache_bytes=2**30))
    await _reply(model, [SYSTEM, {"role": "user", "content": "the quick brown fox"}])
    system_tokens = len(model.tokenizer.encode_chat([SYSTEM], add_generation_prompt=False))
    assert system_tokens >= MIN_TOKENS
    fed.clear()
    other = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]
    result = await _reply(model, other)
    assert fed[0] <= model.count_chat_tokens(other) - system_tokens
    assert result.token_ids == model.generate_chat(other, PARAMS).token_ids


async def test_no_prefix_is_kept_without_a_budget(model: ChatModel) -> None:
    model.set_limits(BatchLimits(prefix_cache_bytes=0))
    await _reply(model, [SYSTEM, {"role": "user", "content": "the quick brown fox"}])
    assert len(model.prefix_cache) == 0
    assert model.saved_bytes == 0


def _arrays(length: int) -> list[np.ndarray]:
    return [np.ones((2, length, 8), dtype=np.float32)]


def test_saved_prefixes_are_evicted_least_recently_used_within_the_budget() -> None:
    one = _arrays(20)[0].nbytes
    cache = PrefixCache(budget_bytes=2 * one)
    a, b, c = (list(range(start, start + 20)) for start in (100, 200, 300))
    cache.save(a, _arrays(20), "turn")
    cache.save(b, _arrays(20), "turn")
    assert cache.lookup([*a, 1])[1] == 20  # a is now the most recently used
    cache.save(c, _arrays(20), "turn")
    assert cache.lookup([*b, 1]) == (None, 0)  # b went
    assert cache.lookup([*a, 1])[1] == 20
    assert cache.nbytes == 2 * one


def test_a_turn_replaces_the_turn_it_continues_and_a_lookup_leaves_a_token_to_feed() -> None:
    cache = PrefixCache(budget_bytes=10**6)
    turn = list(range(1, 31))
    cache.save(turn[:20], _arrays(20), "system")
    cache.save(turn[:25], _arrays(25), "turn")
    cache.save(turn, _arrays(30), "turn")
    assert len(cache) == 2  # the system prompt and the latest turn
    saved, length = cache.lookup(turn)
    assert saved is not None
    assert length == 29  # the last prompt token is fed, so the step has logits to pick from
    assert cache.lookup(list(range(500, 530))) == (None, 0)


async def test_saved_prefixes_count_in_the_pools_memory(tiny_export: Path) -> None:
    pool = ModelPool(tiny_export.parent, PoolSettings(execution_provider="cpu", num_threads=1, keep_alive_s=None))
    async with pool, pool.lease(tiny_export.name) as model:
        before = pool.used_bytes
        await _reply(model, [SYSTEM, {"role": "user", "content": "the quick brown fox"}])
        assert model.saved_bytes > 0
        assert pool.used_bytes == before + model.saved_bytes
