"""Choosing the next token from the last position's logits, in numpy, the way transformers does it.

Order (as in transformers' logits processors): repetition penalty, temperature, top-k, top-p, then a draw
from a seeded generator, so the same seed gives the same text.
"""

from __future__ import annotations

import numpy as np

from inference.params import GenerationParams


class Sampler:
    """One request's token chooser; holds its random generator so draws are reproducible per seed."""

    def __init__(self, params: GenerationParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)

    def choose(self, logits: np.ndarray, history: np.ndarray) -> int:
        """Pick the next id; `history` holds every id so far (prompt and generated), for the penalty."""
        params = self.params
        if params.repetition_penalty != 1.0 and history.size:
            logits = apply_repetition_penalty(logits, history, params.repetition_penalty)
        if params.greedy:
            return int(np.argmax(logits))
        scores = logits.astype(np.float64) / params.temperature
        candidates = np.arange(scores.size)
        if 0 < params.top_k < scores.size:
            candidates = np.argpartition(scores, -params.top_k)[-params.top_k :]
            scores = scores[candidates]
        probs = _softmax(scores)
        if params.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            keep = int(np.searchsorted(cumulative, params.top_p)) + 1  # smallest set reaching top_p
            order = order[:keep]
            candidates, probs = candidates[order], probs[order] / probs[order].sum()
        index = int(np.searchsorted(np.cumsum(probs), self._rng.random() * probs.sum(), side="right"))
        return int(candidates[min(index, candidates.size - 1)])


def apply_repetition_penalty(logits: np.ndarray, history: np.ndarray, penalty: float) -> np.ndarray:
    """Make already-seen tokens less likely: divide positive scores by `penalty`, multiply negative ones."""
    logits = logits.copy()
    seen = logits[history]
    logits[history] = np.where(seen < 0, seen * penalty, seen / penalty)
    return logits


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()
