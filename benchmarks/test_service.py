"""pytest-benchmark suite (`pytest benchmarks`; never part of the test run): the service on the default model.

The same measurements as `python -m benchmarks.compare`, one per benchmark, over HTTP through a real
`beth-chat serve` (greedy, 128 tokens per reply): a whole reply alone, a first turn stopped at its first token,
1-8 concurrent streams, and a 10-turn conversation. The figures a client cares about (decode tokens/s, time to
first token, aggregate tokens/s) are in each benchmark's `extra_info`; the timings are of whole operations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from benchmarks import workload
from benchmarks.models import VARIANTS, export_folder, models_dir
from benchmarks.service import Reply, ServiceClient, running_service
from tests.fixtures.server import ServerProcess

MODEL = f"hf/{VARIANTS['fp32'][0]}"
MAX_TOKENS = 128
T = TypeVar("T")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = models_dir()
    export_folder("fp32", root)
    with running_service(tmp_path_factory.mktemp("bench-service"), root, MAX_TOKENS) as server:
        warm = _call(server, lambda client: client.turn_in_new_conversation("Hello! Who are you?"))
        assert warm.error is None, warm.error
        yield server


@pytest.fixture(scope="module")
def ask() -> Iterator[str]:
    return workload.questions()


def _call(server: ServerProcess, action: Callable[[Client], Awaitable[T]]) -> T:
    async def run() -> T:
        client = Client(server.url, MODEL)
        try:
            return await action(client)
        finally:
            await client.close()

    return asyncio.run(run())


class Client(ServiceClient):
    async def turn_in_new_conversation(self, text: str, first_token_only: bool = False) -> Reply:
        return await self.turn(await self.new_conversation(), text, first_token_only)


def _ok(reply: Reply) -> Reply:
    assert reply.error is None, reply.error
    assert reply.ttft_s is not None
    return reply


def test_single_stream_reply(benchmark: Any, service: ServerProcess, ask: Iterator[str]) -> None:
    replies: list[Reply] = []

    def reply() -> None:
        replies.append(_ok(_call(service, lambda client: client.turn_in_new_conversation(next(ask)))))

    benchmark.pedantic(reply, rounds=3)
    assert all(r.completion_tokens > 1 for r in replies)
    benchmark.extra_info["decode_tokens_per_s"] = workload.median([r.decode_tps or 0.0 for r in replies])
    benchmark.extra_info["time_to_first_token_ms"] = 1000 * workload.median([r.ttft_s or 0.0 for r in replies])


def test_first_token_system_prompt_cached(benchmark: Any, service: ServerProcess, ask: Iterator[str]) -> None:
    replies: list[Reply] = []

    def first_token() -> None:
        text = next(ask)
        replies.append(_ok(_call(service, lambda client: client.turn_in_new_conversation(text, first_token_only=True))))

    benchmark.pedantic(first_token, rounds=5)
    benchmark.extra_info["time_to_first_token_ms"] = 1000 * workload.median([r.ttft_s or 0.0 for r in replies])


@pytest.mark.parametrize("streams", workload.CONCURRENCY)
def test_concurrent_streams(benchmark: Any, service: ServerProcess, ask: Iterator[str], streams: int) -> None:
    rates: list[float] = []

    def together() -> None:
        replies, elapsed = _call(service, lambda client: workload.streams_together(client, ask, streams))
        rates.append(sum(_ok(r).completion_tokens for r in replies) / elapsed)

    benchmark.pedantic(together, rounds=2)
    benchmark.extra_info["aggregate_tokens_per_s"] = workload.median(rates)


def test_conversation_turns(benchmark: Any, service: ServerProcess, ask: Iterator[str]) -> None:
    samples = workload.Samples()
    benchmark.pedantic(lambda: _call(service, lambda client: workload.conversation(client, ask, samples)), rounds=1)
    assert not samples.errors, samples.errors
    assert len(samples.turn_ttft_s) == workload.TURNS
    benchmark.extra_info["time_to_first_token_ms_per_turn"] = [
        1000 * samples.turn_ttft_s[turn][0] for turn in range(1, workload.TURNS + 1)
    ]
    benchmark.extra_info[f"turn_{workload.TURNS}_over_turn_1"] = samples.turn_ratio[0]
