"""`PromptLookup`: draft the next tokens of a sequence by finding its last few tokens earlier in itself.

Decoding on a CPU is bound by reading the weights, and one step over five tokens reads them once, as a
step over one does: on SmolLM2-135M with 2 threads a step costs 9.3 ms for one token and 12.4 ms for four
(int4), 21.9 and 23.6 ms for one and five (fp32). So when the model is likely to repeat a span it has
already seen (a name from the question, a phrase it used before, code it is editing), the generator feeds
that span after the current token, and one step checks every drafted token: the sampler picks its token at
each position from that step's logits, exactly as it would one step at a time, the drafted tokens it picks
anyway are kept with its own token after them, and a wrong draft costs only its share of the step. So greedy
keeps a drafted token when it is the argmax, and sampling when its one draw for that position lands on it
(with probability p(draft), as speculative sampling with a certain draft would keep it). The sampler draws
one random number per token either way, so a seed gives the same text with drafts as without them, and the
same text however long the drafts were (their lengths follow timings). This is prompt lookup decoding (the draft model is the text
itself), as in transformers' `prompt_lookup_num_tokens` and llama.cpp's lookup decoding.

The kept tokens are the ones one-token steps would pick as long as a several-token step computes the same
logits. In float32 it does, to about 1e-5, and the texts are the same (tests/inference/test_lookahead.py). The
int4 kernels round differently for one row and for several (the logits differ by up to about 0.6), so an
int4 answer can take the other side of a near tie and differ from the one-token text after that point; it
is still the greedy answer of the same weights, and the same request always gives the same text.

How long a draft is worth checking depends on the graph: an extra token costs about 3% of a step in fp32
and about 19% in int4 (whose one-token step is much cheaper). So `draft` cuts the found tokens to the length
with the most expected tokens per unit of cost, from the rate at which this sequence's recent drafts were
kept and the step costs timed on this model (`StepCosts`). Replaying the default model's
greedy answers to eight chat prompts against the measured step costs: drafts found after a matching 3- or
2-token n-gram and cut that way saved 1.13x-1.17x of the time per token in int4 and 1.2x-1.27x in fp32, and
lost time on none of the prompts; a fixed 4 tokens lost time on some int4 prompts, and matching single
tokens drafted so often that half of the prompts got slower. README's Performance section has the measured
figures.
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
