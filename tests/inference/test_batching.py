"""Continuous batching: concurrent generations share one step per round and each gets the tokens it would alone;
a model at its batch limit queues requests and refuses only when the queue is full or the wait runs out."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import inference.scheduler
from inference import BatchLimits, ChatModel, GenerationParams, GenerationResult, InferenceError, TextDelta
from inference.events import Event
from inference.run import GenerationRun
from tests.fixtures.polling import wait_until
from tests.inference.conftest import CPU_ONE_THREAD

pytestmark = pytest.mark.anyio
# prompts of different lengths and replies of different lengths: sequences join and leave at different rounds
CHATS = (
    ([{"role": "user", "content": "Hello world!"}], 30),
    ([{"role": "user", "content": "What is the capital of France? Paris is the capital of France."}], 12),
    ([{"role": "system", "content": "write a haiku about the sea"}, {"role": "user", "content": "the fox"}], 40),
    ([{"role": "user", "content": "0123456789 + - * / = ( ) [ ] { } < > | ' , . ; : " * 3}], 25),
    ([{"role": "user", "content": "Grüße aus München: ça va?"}], 18),
)


def _greedy(max_new_tokens: int, **changes: Any) -> GenerationParams:
    return GenerationParams(max_new_tokens=max_new_tokens, temperature=0, stop_token_ids=(), **changes)


@pytest.fixture
def model(tiny_export: Path) -> Iterator[ChatModel]:
    """A model of its own: these tests change its limits."""
    loaded = ChatModel.load(tiny_export, CPU_ONE_THREAD)
    yield loaded
    loaded.close()


@pytest.fixture
def batch_sizes(model: ChatModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows of every batched step the model runs."""
    sizes: list[int] = []
    forward_rows = model.model.forward_rows

    def counting(slots: Any, first: int, token_ids: Any, lengths: Any, *args: Any) -> np.ndarray:
        sizes.append(len(lengths))
        return forward_rows(slots, first, token_ids, lengths, *args)

    monkeypatch.setattr(model.model, "forward_rows", counting)
    return sizes


async def _collect(model: ChatModel, messages: list[dict[str, str]], params: GenerationParams) -> GenerationResult:
    texts, result = [], None
    async for event in model.stream_chat(messages, params):
        if isinstance(event, TextDelta):
            texts.append(event.text)
        else:
            result = event
    assert isinstance(result, GenerationResult)
    assert "".join(texts) == result.text
    return result


async def test_concurrent_generations_of_different_lengths_give_the_tokens_they_give_alone(
    model: ChatModel, batch_sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference.scheduler, "PREFILL_CHUNK", 8)  # long prompts in pieces between the rounds
    alone = [model.generate_chat(messages, _greedy(count)) for messages, count in CHATS]
    batch_sizes.clear()
    together = await asyncio.gather(*(_collect(model, messages, _greedy(count)) for messages, count in CHATS))
    for got, want in zip(together, alone, strict=True):
        assert got.token_ids == want.token_ids
        assert got.text == want.text
        assert got.usage.completion_tokens == want.usage.completion_tokens
    assert max(batch_sizes) >= 3  # several generations really shared steps


async def test_a_long_prompt_goes_in_pieces_between_the_decoding_steps_of_the_others(
    model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference.scheduler, "PREFILL_CHUNK", 4)
    steps: list[tuple[int, int]] = []  # (rows, tokens per row) of every step
    forward_rows = model.model.forward_rows

    def recording(slots: Any, first: int, token_ids: Any, lengths: Any, *args: Any) -> np.ndarray:
        steps.append((len(lengths), len(token_ids[0])))
        return forward_rows(slots, first, token_ids, lengths, *args)

    monkeypatch.setattr(model.model, "forward_rows", recording)
    decoding = model.start_chat(CHATS[0][0], _greedy(120, lookahead_tokens=0))  # no drafts: pieces are prompts
    long_prompt = model.start_chat(CHATS[3][0], _greedy(4, lookahead_tokens=0))
    assert long_prompt.generator.pending > 8 * 4
    await asyncio.gather(_drain(model, decoding), _drain(model, long_prompt))
    first_decode = steps.index((1, 1))
    pieces = [index for index, (_, tokens) in enumerate(steps) if tokens > 1 and index > first_decode]
    assert len(pieces) >= 8
    for before, after in itertools.pairwise(pieces):
        assert after > before + 1  # a decoding step between any two pieces: nobody waits longer than one piece


async def test_drafting_runs_for_a_generation_alone_and_batching_keeps_its_tokens(
    model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model.step_costs, "cost", lambda count: 1.0)  # draft whatever lookup finds
    repeating = [{"role": "user", "content": "one two three one two three one two three one two three"}]
    params = _greedy(48)
    plain = model.generate_chat(repeating, _greedy(48, lookahead_tokens=0))
    runs = [model.start_chat(repeating, params) for _ in range(3)]
    await asyncio.gather(*(_drain(model, run) for run in runs))
    for run in runs:
        assert run.result is not None
        assert run.result.token_ids == plain.token_ids
    solo = model.start_chat(repeating, params)
    await _drain(model, solo)
    assert solo.result is not None
    assert solo.result.token_ids == plain.token_ids
    assert solo.generator.accepted_tokens > 0  # alone, it drafted


async def _drain(model: ChatModel, run: GenerationRun) -> None:
    async for _ in model.stream_run(run):
        pass


class Sink:
    """Collects what the scheduler delivers for one run, from its thread; a held sink keeps the scheduler's
    thread in its first delivery until `release` (so that run cannot finish meanwhile)."""

    def __init__(self, held: bool = False) -> None:
        self.items: list[list[Event] | BaseException] = []
        self.ended = threading.Event()
        self._gate = threading.Event()
        if not held:
            self._gate.set()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, item: list[Event] | BaseException) -> None:
        self.items.append(item)
        self._gate.wait(30)
        if isinstance(item, BaseException) or any(isinstance(e, GenerationResult) for e in item):
            self.ended.set()

    @property
    def result(self) -> GenerationResult | BaseException | None:
        for item in self.items:
            if isinstance(item, BaseException):
                return item
            for event in item:
                if isinstance(event, GenerationResult):
                    return event
        return None


def _long_run(model: ChatModel) -> GenerationRun:
    return model.start_chat(CHATS[0][0], _greedy(400))


def test_a_full_queue_refuses_and_a_queued_request_starts_when_a_place_frees(model: ChatModel) -> None:
    model.set_limits(BatchLimits(max_batch_size=1, queue_length=1, queue_wait_s=60))
    first, queued, refused = Sink(held=True), Sink(), Sink()
    model.scheduler.submit(_long_run(model), first)
    wait_until(lambda: first.items, timeout=30, interval=0.005)  # the first one runs (and holds the thread)...
    messages, count = CHATS[1]
    model.scheduler.submit(model.start_chat(messages, _greedy(count)), queued)
    with pytest.raises(InferenceError) as overloaded:
        model.scheduler.submit(model.start_chat(messages, _greedy(count)), refused)
    assert overloaded.value.code == "HF_OVERLOADED"
    assert overloaded.value.generic_code == "OVERLOADED"
    assert model.queued == 1  # ...and the second waits for its place
    assert not queued.items
    first.release()
    assert queued.ended.wait(30)
    result = queued.result
    assert isinstance(result, GenerationResult)
    assert result.token_ids == model.generate_chat(messages, _greedy(count)).token_ids
    assert first.ended.is_set()  # it started when the first one had ended
    assert model.queued == 0


def test_a_request_that_waits_too_long_is_refused(model: ChatModel) -> None:
    model.set_limits(BatchLimits(max_batch_size=1, queue_length=4, queue_wait_s=0.0))  # refused at the next round
    first, queued = Sink(), Sink()
    model.scheduler.submit(_long_run(model), first)
    messages, count = CHATS[1]
    model.scheduler.submit(model.start_chat(messages, _greedy(count)), queued)
    assert queued.ended.wait(30)
    error = queued.result
    assert isinstance(error, InferenceError)
    assert error.code == "HF_OVERLOADED"
    assert "waited" in error.message
    assert first.ended.wait(30)
    assert isinstance(first.result, GenerationResult)  # the running one was not disturbed
    assert first.result.finish_reason in ("length", "stop")


def test_the_queue_reports_each_admitted_requests_wait(model: ChatModel) -> None:
    waits: list[float] = []
    model.on_admitted = waits.append
    model.set_limits(BatchLimits(max_batch_size=1, queue_length=2, queue_wait_s=60))
    first, second = Sink(held=True), Sink()
    model.scheduler.submit(_long_run(model), first)
    wait_until(lambda: first.items, timeout=30, interval=0.005)
    messages, count = CHATS[1]
    model.scheduler.submit(model.start_chat(messages, _greedy(count)), second)
    submitted = time.monotonic()
    wait_until(lambda: model.queued == 1, timeout=30, interval=0.005)
    released = time.monotonic()
    first.release()
    assert second.ended.wait(30)
    assert len(waits) == 2
    assert waits[1] >= released - submitted  # it could not start before the first one ended
