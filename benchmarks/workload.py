"""What the benchmark asks, and the four measurements it makes of any chat runner.

A runner is the service over HTTP (`service.ServiceClient`) or llama.cpp in-process (`llama.LlamaRunner`):
conversations and timed turns. Every conversation starts with a question asked nowhere else in the run, so
the only prefix two conversations share is the system prompt.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from benchmarks.service import Reply

CONCURRENCY = (1, 2, 4, 8)
TURNS = 10

_TOPICS = (
    "a lighthouse keeper",
    "the water cycle",
    "a city garden",
    "the first bicycle",
    "a mountain railway",
    "honey bees",
    "a night market",
    "the printing press",
    "a desert oasis",
    "volcanoes",
    "a violin maker",
    "the moon landing",
    "a coral reef",
    "the compass",
    "an old library",
    "glaciers",
    "a bakery at dawn",
    "the telephone",
    "a river delta",
    "owls",
    "a fishing village",
    "the steam engine",
    "a rainforest",
    "chess",
)
_FORMS = (
    "Write a short story about {}.",
    "Explain {} to a curious ten-year-old, in detail.",
    "Describe {} in a few paragraphs.",
    "Write a blog post about {}.",
)
FOLLOW_UPS = (
    "Tell me more about that.",
    "Can you give an example?",
    "What is the most surprising part?",
    "How would you explain it in simpler words?",
    "What happened next?",
    "Summarise that in a few sentences.",
    "What questions do people usually ask about it?",
    "Can you add a few more details?",
    "Why does that matter?",
)


def questions() -> Iterator[str]:
    """Opening questions, all different, in the same order on every run.

    After the 96 combinations of form and topic they come again with a number in front, so that a repeat
    never shares more than the system prompt with an earlier conversation.
    """
    for cycle in itertools.count():
        for form, topic in itertools.product(_FORMS, _TOPICS):
            yield form.format(topic) if cycle == 0 else f"({cycle + 1}) {form.format(topic)}"


class ChatRunner(Protocol):
    name: str
    concurrent: bool  # whether several streams at once make sense (llama.cpp's Python binding runs one)

    async def new_conversation(self) -> str: ...

    async def turn(self, conversation_id: str, text: str, first_token_only: bool = False) -> Reply: ...


@dataclass
class Samples:
    """Everything one runner measured over the rounds; medians are taken when reporting."""

    decode_tps: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    cached_ttft_s: list[float] = field(default_factory=list)
    aggregate_tps: dict[int, list[float]] = field(default_factory=dict)
    scaling: dict[int, list[float]] = field(default_factory=dict)  # aggregate / one stream's, same round
    turn_ttft_s: dict[int, list[float]] = field(default_factory=dict)
    turn_prompt_tokens: dict[int, list[int]] = field(default_factory=dict)
    turn_ratio: list[float] = field(default_factory=list)  # last turn / first turn, same conversation
    errors: list[str] = field(default_factory=list)

    def failed(self, reply: Reply) -> bool:
        if reply.error is not None:
            self.errors.append(reply.error)
            return True
        return False


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


async def single_stream(runner: ChatRunner, ask: Iterator[str], samples: Samples) -> None:
    """One whole reply alone: decode rate and time to first token."""
    reply = await runner.turn(await runner.new_conversation(), next(ask))
    if samples.failed(reply):
        return
    if reply.decode_tps is not None:
        samples.decode_tps.append(reply.decode_tps)
    if reply.ttft_s is not None:
        samples.ttft_s.append(reply.ttft_s)


async def cached_first_turns(runner: ChatRunner, ask: Iterator[str], samples: Samples, count: int) -> None:
    """First turns of new conversations, stopped at their first token: only the system prompt can be cached."""
    for _ in range(count):
        reply = await runner.turn(await runner.new_conversation(), next(ask), first_token_only=True)
        if not samples.failed(reply) and reply.ttft_s is not None:
            samples.cached_ttft_s.append(reply.ttft_s)


async def streams_together(runner: ChatRunner, ask: Iterator[str], streams: int) -> tuple[list[Reply], float]:
    """`streams` whole replies in new conversations, started together; also the seconds until the last ended."""
    conversations = [await runner.new_conversation() for _ in range(streams)]
    started = time.perf_counter()
    replies = await asyncio.gather(*(runner.turn(c, next(ask)) for c in conversations))
    return list(replies), time.perf_counter() - started


async def concurrent_streams(runner: ChatRunner, ask: Iterator[str], samples: Samples) -> None:
    """1, 2, 4 and 8 streams together: tokens of all of them over the time until the last ends."""
    one_stream = None
    for streams in CONCURRENCY:
        replies, elapsed = await streams_together(runner, ask, streams)
        if any([samples.failed(reply) for reply in replies]):
            continue
        aggregate = sum(reply.completion_tokens for reply in replies) / elapsed
        samples.aggregate_tps.setdefault(streams, []).append(aggregate)
        if streams == 1:
            one_stream = aggregate
        elif one_stream:
            samples.scaling.setdefault(streams, []).append(aggregate / one_stream)


async def conversation(runner: ChatRunner, ask: Iterator[str], samples: Samples, turns: int = TURNS) -> None:
    """One conversation of `turns` whole turns: time to first token of each as the history grows."""
    conversation_id = await runner.new_conversation()
    first = None
    for number, text in enumerate([next(ask), *FOLLOW_UPS[: turns - 1]], start=1):
        reply = await runner.turn(conversation_id, text)
        if samples.failed(reply) or reply.ttft_s is None:
            return
        samples.turn_ttft_s.setdefault(number, []).append(reply.ttft_s)
        if reply.prompt_tokens is not None:
            samples.turn_prompt_tokens.setdefault(number, []).append(reply.prompt_tokens)
        if number == 1:
            first = reply.ttft_s
        elif number == turns and first:
            samples.turn_ratio.append(reply.ttft_s / first)
