"""`PromptLookup`: draft the next tokens of a sequence by finding its last few tokens earlier in itself.

Decoding on a CPU is bound by reading the weights, and one step over five tokens reads them once, as a
step over one does: on SmolLM2-135M with 2 threads a step costs 9.3 ms for one token and 12.4 ms for four
(int4), 21.9 and 23.6 ms for one and five (fp32). So when the model is likely to repeat a span it has
already seen (a name from the question, a phrase it used before, code it is editing), the generator feeds
that span after the current token, and one step checks every drafted token: the sampler picks its token at
each position from that step's logits, the drafted tokens it keeps are kept with its own token after them,
and a wrong draft costs only its share of the step. Greedy keeps a drafted token when it is the argmax;
sampling keeps it with its probability (speculative sampling, inference/sampling.py), so the text follows
the same distribution as without drafts. This is prompt lookup decoding (the draft model is the text
itself), as in transformers' `prompt_lookup_num_tokens` and llama.cpp's lookup decoding.

The kept tokens are the ones one-token steps would pick as long as a several-token step computes the same
logits. In float32 it does, to about 1e-5, and the texts are the same (tests/inference/test_lookahead.py). The
int4 kernels round differently for one row and for several (the logits differ by up to about 0.6), so an
int4 answer can take the other side of a near tie and differ from the one-token text after that point; it
is still the greedy answer of the same weights, and the same request always gives the same text.

Choosing the policy: replaying the default model's greedy answers to eight chat prompts against the measured
step costs, drafts of up to 4 tokens after a matching 3- or 2-token n-gram saved 1.3x of the time per token
in int4 and 1.4x in fp32, and lost time on none of the prompts; matching single tokens too drafted so often
that half of the prompts got slower. README's Performance section has the measured figures.
"""

from __future__ import annotations

from collections.abc import Iterable

NGRAM_SIZES = (3, 2)  # the longest match first: it predicts the continuation best


class PromptLookup:
    """The token history of one sequence, indexed by n-gram, and the draft it suggests next."""

    def __init__(self, max_tokens: int, ngram_sizes: tuple[int, ...] = NGRAM_SIZES) -> None:
        self.max_tokens = max_tokens
        self.ngram_sizes = ngram_sizes
        self._history: list[int] = []
        # n-gram -> where the token after its latest earlier occurrence sits in the history
        self._continuations: dict[tuple[int, ...], int] = {}

    def extend(self, token_ids: Iterable[int]) -> None:
        """Append tokens; each one becomes the continuation of the n-grams that end just before it."""
        history = self._history
        for token in token_ids:
            end = len(history)
            for size in self.ngram_sizes:
                if end >= size:
                    self._continuations[tuple(history[end - size : end])] = end
            history.append(token)

    def draft(self, limit: int) -> list[int]:
        """Up to `min(limit, max_tokens)` tokens that followed the latest earlier occurrence of the tail."""
        count = min(limit, self.max_tokens)
        history = self._history
        if count <= 0:
            return []
        for size in self.ngram_sizes:
            if len(history) < size:
                continue
            start = self._continuations.get(tuple(history[-size:]))
            if start is not None:
                return history[start : start + count]
        return []
