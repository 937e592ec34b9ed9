"""What a generation streams: text deltas, then one final result with usage (the shape Ollama's API uses)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts and timings of one generation; timings in seconds, rates in tokens per second."""

    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float | None
    decode_tokens_per_s: float | None
    duration_s: float


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New text to append to the reply (never ends inside a UTF-8 character, never holds a stop string)."""

    text: str


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """The end of a generation: the whole text, why it ended (stop, length, cancelled, timeout) and usage."""

    text: str
    finish_reason: str
    usage: Usage
    token_ids: list[int] = field(default_factory=list)  # generated ids, stop token included


Event = TextDelta | GenerationResult
