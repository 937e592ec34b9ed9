"""Choosing the next token from the last position's logits, in numpy, the way transformers does it.

Order (as in transformers' logits processors): repetition penalty, temperature, top-k, top-p, then a draw
from a seeded generator, so the same seed gives the same text.
"""

from __future__ import annotations

import numpy as np

from inference.params import GenerationParams

_SHORTLIST = 512


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
        scores = logits.astype(np.float32, copy=False) / np.float32(params.temperature)  # logits are float32 already
        candidates: np.ndarray | None = None  # None: every id, in order
        if 0 < params.top_k < scores.size:
            candidates = np.argpartition(scores, -params.top_k)[-params.top_k :]
            scores = scores[candidates]
        probs = _softmax(scores)
        if params.top_p < 1.0:
            candidates, probs = _nucleus(candidates, probs, params.top_p)
        cumulative = np.cumsum(probs, dtype=np.float64)
        index = min(int(np.searchsorted(cumulative, self._rng.random() * cumulative[-1], side="right")), probs.size - 1)
        return int(index if candidates is None else candidates[index])


def _nucleus(candidates: np.ndarray | None, probs: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """The smallest set of ids holding `top_p` of the mass, renormalised.

    Sorting the whole vocabulary every step costs more than the model's step, so the sort starts from the
    `_SHORTLIST` most likely ids, which is exact whenever they already hold `top_p` (nearly always).
    """
    ids = np.arange(probs.size) if candidates is None else candidates
    if probs.size > _SHORTLIST:
        shortlist = np.argpartition(probs, -_SHORTLIST)[-_SHORTLIST:]
        if probs[shortlist].sum() >= top_p:
            ids, probs = ids[shortlist], probs[shortlist]
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order], dtype=np.float64)
    keep = min(int(np.searchsorted(cumulative, top_p)) + 1, order.size)
    order = order[:keep]
    kept = probs[order]
    return ids[order], kept / kept.sum()


def apply_repetition_penalty(logits: np.ndarray, history: np.ndarray, penalty: float) -> np.ndarray:
    """Make already-seen tokens less likely: divide positive scores by `penalty`, multiply negative ones."""
    logits = logits.copy()
    seen = logits[history]
    logits[history] = np.where(seen < 0, seen * penalty, seen / penalty)
    return logits


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()
