"""The async relay passes on every event of a run, the final result included, however the threads interleave."""

from __future__ import annotations

import time

import pytest

from inference import ChatModel, GenerationParams, GenerationResult, TextDelta
from tests.inference.conftest import PROMPTS

pytestmark = pytest.mark.anyio


async def test_relay_delivers_the_last_batch_when_the_run_finished_first(tiny_model: ChatModel) -> None:
    # The run finishes in the worker while the event loop is busy, so `run.done` is already true when the
    # relay picks up the earlier batches: it must still relay the last text and the result.
    params = GenerationParams(max_new_tokens=16, temperature=0, stop_token_ids=())
    run = tiny_model.start_chat(PROMPTS[0], params)
    events = tiny_model.stream_run(run)
    first = await anext(events)
    deadline = time.monotonic() + 30
    while not run.done and time.monotonic() < deadline:
        time.sleep(0.01)  # noqa: ASYNC251 (blocks the loop on purpose: the worker runs to the end meanwhile)
    assert run.done
    rest = [event async for event in events]
    received = [first, *rest]
    assert isinstance(received[-1], GenerationResult)
    assert received[-1].finish_reason == "length"
    text = "".join(event.text for event in received if isinstance(event, TextDelta))
    assert text == received[-1].text == run.result.text  # type: ignore[union-attr]


async def test_every_streamed_run_ends_with_its_result(tiny_model: ChatModel) -> None:
    params = GenerationParams(max_new_tokens=8, temperature=0, stop_token_ids=())
    for _ in range(10):
        received = [event async for event in tiny_model.stream_chat(PROMPTS[1], params)]
        assert isinstance(received[-1], GenerationResult)
        assert sum(isinstance(event, GenerationResult) for event in received) == 1
