"""`PromptLookup`: draft the next tokens of a sequence by finding its last few tokens earlier in itself.

Decoding on a CPU is bound by reading the weights, so one step over several tokens costs little more than a
step over one. When the text is likely to repeat a span it already holds (a name from the question, code being
edited), the generator feeds that span after the current token and one step checks every drafted token: the
sampler picks each position's token from that step's logits exactly as one-token steps would, keeps the drafted
tokens it picks anyway, and adds its own token after them. It draws one random number per token either way, so a
seed gives the same text with or without drafts. This is prompt lookup decoding (the draft model is the text
itself), as in transformers' `prompt_lookup_num_tokens` and llama.cpp's lookup decoding.

The kept tokens equal the one-token ones as long as a several-token step computes the same logits: in float32
it does (tests/inference/test_lookahead.py); int4 kernels round differently for one row and several, so an int4
answer can take the other side of a near tie, while the same request still always gives the same text.

An extra drafted token costs a different share of a step per graph (small in fp32, larger in int4), so `draft`
cuts the found tokens to the length with the most expected kept tokens per unit of cost, from the rate at which
this sequence's recent drafts were kept and the model's timed step costs (`StepCosts`). Matches of
3 or 2 tokens only: single-token matches draft so often that they cost more than they save. docs/performance.md
has the measured figures.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

NGRAM_SIZES = (3, 2)  # the longest match first: it predicts the continuation best
MEMORY = 0.9  # weight of the earlier drafts' outcomes at each new one: the rate follows the text as it changes
# A step over more tokens than this costs more than its drafts could save.
MAX_LOOKAHEAD_TOKENS = 16
# Until a step of n tokens has been timed, its cost is taken as 1 + this * (n - 1) one-token steps (measured
# on SmolLM2-135M, 2 threads: about 0.19 in int4, 0.03 in fp32), which lets drafting start cautiously.
STEP_COST_PRIOR = 0.25
_STEP_AVERAGING = 0.2  # weight of the newest timing in a step count's moving average


class StepCosts:
    """How long one model's single-sequence steps take by the number of tokens fed (what a draft costs).

    One per loaded model, shared by its generations; steps of prompts are not recorded (only the ones a
    draft could make: up to `MAX_LOOKAHEAD_TOKENS + 1` tokens after the first step).
    """

    def __init__(self) -> None:
        #: tokens fed to a step -> moving average of its seconds
        self.seconds: dict[int, float] = {}
        self._lock = threading.Lock()

    def record(self, count: int, seconds: float) -> None:
        if count > MAX_LOOKAHEAD_TOKENS + 1:
            return
        with self._lock:
            average = self.seconds.get(count)
            self.seconds[count] = seconds if average is None else average + _STEP_AVERAGING * (seconds - average)

    def cost(self, count: int) -> float:
        """The cost of a step over `count` tokens, in one-token steps (timed, or the prior)."""
        one, seconds = self.seconds.get(1), self.seconds.get(count)
        if one and seconds:
            return max(1.0, seconds / one)
        return 1.0 + STEP_COST_PRIOR * (count - 1)


class PromptLookup:
    """The token history of one sequence, indexed by n-gram, and the draft it suggests next."""

    def __init__(self, max_tokens: int, ngram_sizes: tuple[int, ...] = NGRAM_SIZES) -> None:
        self.max_tokens = max_tokens
        self.ngram_sizes = ngram_sizes
        self._history: list[int] = []
        # n-gram -> where the token after its latest earlier occurrence sits in the history
        self._continuations: dict[tuple[int, ...], int] = {}
        self._kept = 1.0  # drafted tokens kept, of those checked: a prior of one in two
        self._checked = 2.0

    def extend(self, token_ids: Iterable[int]) -> None:
        """Append tokens; each one becomes the continuation of the n-grams that end just before it."""
        history = self._history
        for token in token_ids:
            end = len(history)
            for size in self.ngram_sizes:
                if end >= size:
                    self._continuations[tuple(history[end - size : end])] = end
            history.append(token)

    def draft(self, limit: int, step_cost: Callable[[int], float] | None = None) -> list[int]:
        """Up to `min(limit, max_tokens)` tokens that followed the latest earlier occurrence of the tail.

        With `step_cost` (a step's cost for a number of tokens, relative to a one-token step), the draft is
        cut to the length that makes the most tokens per unit of cost, given how often this sequence's
        drafts were kept: none when a step over more tokens costs more than its drafts are likely to save.
        """
        count = min(limit, self.max_tokens)
        history = self._history
        if count <= 0:
            return []
        for size in self.ngram_sizes:
            if len(history) < size:
                continue
            start = self._continuations.get(tuple(history[-size:]))
            if start is not None:
                found = history[start : start + count]
                return found if step_cost is None else found[: self._worth(len(found), step_cost)]
        return []

    def record(self, drafted: int, kept: int) -> None:
        """A step checked `drafted` tokens and kept the first `kept`: the rate that decides draft lengths."""
        self._kept = MEMORY * self._kept + kept
        self._checked = MEMORY * self._checked + min(drafted, kept + 1)  # after the first rejection: unknown

    def _worth(self, available: int, step_cost: Callable[[int], float]) -> int:
        rate = self._kept / self._checked
        best_length, best_value = 0, 1.0  # a plain step: one token for one step's cost
        expected = 0.0  # drafted tokens expected to be kept
        for length in range(1, available + 1):
            expected += rate**length
            value = (1.0 + expected) / step_cost(length + 1)
            if value > best_value:
                best_length, best_value = length, value
        return best_length
