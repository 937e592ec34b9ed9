"""Token choice: greedy is argmax, the same seed draws the same tokens, filters keep what they promise."""

from __future__ import annotations

import numpy as np
import pytest

from inference import GenerationParams, InferenceError
from inference.sampling import Sampler, apply_repetition_penalty

LOGITS = np.array([1.0, 3.0, -2.0, 2.5, 0.5], dtype=np.float32)
NO_HISTORY = np.empty(0, dtype=np.int64)


def _draws(params: GenerationParams, count: int = 200) -> list[int]:
    sampler = Sampler(params)
    return [sampler.choose(LOGITS, NO_HISTORY) for _ in range(count)]


def test_temperature_zero_is_argmax() -> None:
    assert Sampler(GenerationParams(temperature=0)).choose(LOGITS, NO_HISTORY) == 1


def test_the_same_seed_draws_the_same_tokens() -> None:
    params = GenerationParams(temperature=1.0, seed=7)
    assert _draws(params) == _draws(params)
    assert _draws(params) != _draws(GenerationParams(temperature=1.0, seed=8))


def test_top_k_keeps_only_the_k_best() -> None:
    assert set(_draws(GenerationParams(temperature=5.0, top_k=2, seed=1))) == {1, 3}


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    assert set(_draws(GenerationParams(temperature=1.0, top_p=0.01, seed=1))) == {1}
    assert set(_draws(GenerationParams(temperature=1.0, top_p=0.75, seed=1))) == {1, 3}


def test_repetition_penalty_divides_positive_and_multiplies_negative_scores() -> None:
    penalised = apply_repetition_penalty(LOGITS, np.array([1, 2, 1]), 2.0)
    assert penalised.tolist() == [1.0, 1.5, -4.0, 2.5, 0.5]
    assert Sampler(GenerationParams(temperature=0, repetition_penalty=2.0)).choose(LOGITS, np.array([1])) == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"max_new_tokens": 0},
        {"temperature": -1.0},
        {"top_k": -1},
        {"top_p": 0.0},
        {"repetition_penalty": 0.0},
    ],
)
def test_invalid_options_are_refused_with_a_configuration_error(bad: dict[str, float]) -> None:
    with pytest.raises(InferenceError) as caught:
        GenerationParams(**bad)  # type: ignore[arg-type]
    assert caught.value.generic_code == "INVALID_REQUEST"
    assert next(iter(bad)) in caught.value.message
