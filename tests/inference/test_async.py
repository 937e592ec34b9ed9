"""The async API: usage and finish reasons, cancellation and timeout within one step, a free event loop,
and concurrent requests that each get the text they would get alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from inference import ChatModel, GenerationParams, GenerationResult, TextDelta
from tests.fixtures.polling import wait_until_async
from tests.inference.conftest import GREEDY, PROMPTS

pytestmark = pytest.mark.anyio
LONG = GenerationParams(max_new_tokens=300, temperature=0, stop_token_ids=())


async def _collect(
    model: ChatModel, messages: list[dict[str, Any]], params: GenerationParams, **kw: Any
) -> tuple[str, GenerationResult]:
    texts, result = [], None
    async for event in model.stream_chat(messages, params, **kw):
        if isinstance(event, TextDelta):
            texts.append(event.text)
        else:
            result = event
    assert isinstance(result, GenerationResult)
    return "".join(texts), result


async def test_streamed_result_carries_usage(tiny_model: ChatModel) -> None:
    params = GenerationParams(max_new_tokens=12, temperature=0, stop_token_ids=())
    text, result = await _collect(tiny_model, PROMPTS[0], params)
    usage = result.usage
    assert text == result.text
    assert result.finish_reason == "length"
    assert usage.prompt_tokens == tiny_model.count_chat_tokens(PROMPTS[0])
    assert usage.completion_tokens == 12
    assert usage.time_to_first_token_s is not None
    assert usage.time_to_first_token_s > 0
    assert usage.decode_tokens_per_s is not None
    assert usage.decode_tokens_per_s > 0
    assert usage.duration_s >= usage.time_to_first_token_s


async def test_a_stop_token_ends_with_reason_stop(tiny_model: ChatModel) -> None:
    first = tiny_model.generate_chat(PROMPTS[0], GREEDY).token_ids[0]
    _, result = await _collect(
        tiny_model, PROMPTS[0], GenerationParams(max_new_tokens=12, temperature=0, stop_token_ids=(first,))
    )
    assert result.finish_reason == "stop"
    assert result.usage.completion_tokens == 1


def test_cancel_between_steps_ends_at_the_next_step(tiny_model: ChatModel) -> None:
    run = tiny_model.start_chat(PROMPTS[0], LONG)
    for _ in range(5):
        run.step()
    run.cancel()
    events = run.step()
    assert events[-1] is run.result
    assert run.result.finish_reason == "cancelled"
    assert run.result.usage.completion_tokens == 5
    expected = tiny_model.generate_chat(
        PROMPTS[0], GenerationParams(max_new_tokens=5, temperature=0, stop_token_ids=())
    )
    assert run.result.text == expected.text
    assert run.result.token_ids == expected.token_ids


def test_a_passed_deadline_ends_at_the_next_step_with_timeout(tiny_model: ChatModel) -> None:
    run = tiny_model.start_chat(PROMPTS[0], LONG, timeout_s=3600)
    for _ in range(4):
        run.step()
    run.expire()
    run.step()
    assert run.result is not None
    assert run.result.finish_reason == "timeout"
    assert run.result.usage.completion_tokens == 4


async def test_cancel_event_stops_the_stream_within_one_step(tiny_model: ChatModel) -> None:
    cancel = asyncio.Event()
    run = tiny_model.start_chat(PROMPTS[1], LONG, cancel=cancel)
    seen_at_cancel = None
    result = None
    async for event in tiny_model.stream_run(run, cancel):
        if isinstance(event, TextDelta) and seen_at_cancel is None:
            seen_at_cancel = len(run.generator.generated)
            cancel.set()
        elif isinstance(event, GenerationResult):
            result = event
    assert result is not None
    assert result.finish_reason == "cancelled"
    assert seen_at_cancel is not None
    # the step under way may finish (a token and the drafted tokens it keeps), no more
    assert result.usage.completion_tokens <= seen_at_cancel + 1 + run.generator.params.lookahead_tokens
    full = tiny_model.generate_chat(PROMPTS[1], LONG)
    assert result.token_ids == full.token_ids[: len(result.token_ids)]
    assert full.text.startswith(result.text)
    assert result.usage.completion_tokens < LONG.max_new_tokens


async def test_timeout_returns_the_partial_text(tiny_model: ChatModel) -> None:
    gate = threading.Event()
    original = tiny_model.model.forward

    def slow_forward(state: Any, token_ids: Sequence[int], logits_to_keep: int = 1) -> np.ndarray:
        gate.wait(0.02)  # never set: each step takes a little while, so the deadline passes mid-run
        return original(state, token_ids, logits_to_keep)

    tiny_model.model.forward = slow_forward  # type: ignore[method-assign]
    try:
        text, result = await _collect(tiny_model, PROMPTS[0], LONG, timeout_s=0.3)
    finally:
        del tiny_model.model.forward
    assert result.finish_reason == "timeout"
    assert 0 < result.usage.completion_tokens < LONG.max_new_tokens
    assert text == result.text


async def test_a_consumer_that_leaves_cancels_the_run(tiny_model: ChatModel) -> None:
    run = tiny_model.start_chat(PROMPTS[0], LONG)
    events = tiny_model.stream_run(run)
    await anext(events)
    await events.aclose()

    async def ended() -> bool:
        return run.done

    await wait_until_async(ended, within_s=5, interval=0.01, what="the run to end")
    assert run.result is not None
    assert run.result.finish_reason == "cancelled"


async def test_the_event_loop_runs_while_a_step_is_under_way(
    tiny_model: ChatModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first step waits until a coroutine on the loop opens the gate: that only happens if the step runs
    # off the loop's thread (a step run on the loop would wait out the 10 s and fail the assertion).
    gate = threading.Event()
    opened_in_time: list[bool] = []
    original = tiny_model.model.forward

    def gated_forward(state: Any, token_ids: Sequence[int], logits_to_keep: int = 1) -> np.ndarray:
        if not opened_in_time:
            opened_in_time.append(gate.wait(10))
        return original(state, token_ids, logits_to_keep)

    monkeypatch.setattr(tiny_model.model, "forward", gated_forward)

    async def open_gate() -> None:
        await asyncio.sleep(0.01)
        gate.set()

    opener = asyncio.create_task(open_gate())
    _, result = await _collect(tiny_model, PROMPTS[0], GREEDY)
    await opener
    assert opened_in_time == [True]
    assert result.finish_reason in ("stop", "length")


async def test_concurrent_requests_each_get_their_text_alone(tiny_model: ChatModel) -> None:
    params = GenerationParams(max_new_tokens=40, temperature=0, stop_token_ids=())
    alone = [tiny_model.generate_chat(messages, params) for messages in PROMPTS]
    together = await asyncio.gather(*(_collect(tiny_model, messages, params) for messages in [*PROMPTS, *PROMPTS]))
    for (text, result), expected in zip(together, [*alone, *alone], strict=True):
        assert result.token_ids == expected.token_ids
        assert text == expected.text
