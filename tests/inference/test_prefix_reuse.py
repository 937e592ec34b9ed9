"""Prefix reuse: a conversation's next turn and a shared system prompt skip the tokens already computed, and the
text is the same as after a fresh prefill; saved prefixes are evicted least recently used within a budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference import BatchLimits, ChatModel, GenerationParams, GenerationResult, ModelPool, PoolSettings
from inference.kv_slots import SlotCache
from inference.prefix_cache import LAST_PART_TRIES, MIN_TOKENS, PrefixCache
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


def _aligned(model: ChatModel, messages: list[dict[str, str]]) -> list[int]:
    """The prompt the next turn will feed: saved replies in their own tokens."""
    tokenizer = model.tokenizer
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
    return model.prefix_cache.align(tokenizer.encode_chat(messages), decode, tokenizer.special_ids)


async def test_the_next_turn_prefills_only_its_new_tokens_and_says_the_same(model: ChatModel, fed: list[int]) -> None:
    turn = [SYSTEM, {"role": "user", "content": "Hello world! How are you today?"}]
    first = await _reply(model, turn)
    turn = [*turn, {"role": "assistant", "content": first.text}, {"role": "user", "content": "And the fox?"}]
    prompt = _aligned(model, turn)
    fed.clear()
    second = await _reply(model, turn)
    assert second.usage.prompt_tokens == len(prompt)
    assert fed[1:] == [1] * (len(second.token_ids) - 1)
    # the new message, and at most the reply's last few tokens, where its cut falls inside a prompt token
    new_tokens = len(prompt) - (first.usage.prompt_tokens + len(first.token_ids) - 1)
    assert new_tokens <= fed[0] <= new_tokens + LAST_PART_TRIES
    assert second.token_ids == model.generate(prompt, PARAMS).token_ids  # a fresh prefill says the same


async def test_a_reply_tokenized_otherwise_in_the_next_prompt_is_not_fed_again(
    model: ChatModel, fed: list[int]
) -> None:
    """A model's reply is often not in the tokens its text gives when tokenized again; the saved turn's own
    tokens stand in for it, so the next turn feeds only the new message, and says what a fresh prefill of
    that same prompt says."""
    turns = [SYSTEM, {"role": "user", "content": "Hello world! How are you today?"}]
    replies = []
    for question in ("And the fox?", "Tell me more.", "Why?"):
        reply = await _reply(model, turns)
        replies.append(reply)
        turns = [*turns, {"role": "assistant", "content": reply.text}, {"role": "user", "content": question}]
    assert any(model.tokenizer.encode(r.text) != r.token_ids for r in replies)  # the case this test is about
    prompt = _aligned(model, turns)
    assert model.tokenizer.decode(prompt, skip_special_tokens=False) == model.tokenizer.render_chat(turns)
    last = replies[-1]
    new_tokens = len(prompt) - (last.usage.prompt_tokens + len(last.token_ids) - 1)
    model.set_limits(BatchLimits(prefix_cache_bytes=2**30))  # the saved turns stay; the next start copies one
    fed.clear()
    result = await _reply(model, turns)
    assert result.usage.prompt_tokens == len(prompt)
    assert new_tokens <= fed[0] <= new_tokens + LAST_PART_TRIES
    assert result.token_ids == model.generate(prompt, PARAMS).token_ids


async def test_the_next_turn_in_the_row_its_last_turn_left_copies_nothing(
    model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation whose last turn left the cache in the row the next generation takes continues there;
    with another conversation in between, the saved copy is written into the row instead."""
    slots_written: list[int] = []
    first = [SYSTEM, {"role": "user", "content": "Hello world! How are you today?"}]
    reply = await _reply(model, first)
    write = SlotCache.write

    def counting(self: SlotCache, row: int, saved: Any, length: int) -> None:
        slots_written.append(length)
        write(self, row, saved, length)

    monkeypatch.setattr(SlotCache, "write", counting)
    second = [*first, {"role": "assistant", "content": reply.text}, {"role": "user", "content": "And the fox?"}]
    result = await _reply(model, second)
    assert slots_written == []
    prompt = _aligned(model, second)
    assert result.token_ids == model.generate(prompt, PARAMS).token_ids
    await _reply(model, [SYSTEM, {"role": "user", "content": "the quick brown fox"}])
    third = [*second, {"role": "assistant", "content": result.text}, {"role": "user", "content": "Why?"}]
    await _reply(model, third)
    assert slots_written
    assert slots_written[-1] > len(model.tokenizer.encode_chat(second)) - LAST_PART_TRIES


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
