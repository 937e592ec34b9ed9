"""Sampling options end to end on the tiny model: a seed fixes the text, temperature 0 is greedy."""

from __future__ import annotations

from inference import ChatModel, GenerationParams
from tests.inference.conftest import PROMPTS


def _sampled(model: ChatModel, **options: object) -> list[int]:
    params = GenerationParams(max_new_tokens=24, stop_token_ids=(), **options)  # type: ignore[arg-type]
    return model.generate_chat(PROMPTS[0], params).token_ids


def test_the_same_seed_gives_the_same_text(tiny_model: ChatModel) -> None:
    first = _sampled(tiny_model, temperature=1.0, seed=7)
    assert _sampled(tiny_model, temperature=1.0, seed=7) == first
    assert any(_sampled(tiny_model, temperature=1.0, seed=seed) != first for seed in (8, 9, 10))


def test_temperature_zero_is_greedy_whatever_the_seed_or_filters(tiny_model: ChatModel) -> None:
    greedy = _sampled(tiny_model, temperature=0)
    assert _sampled(tiny_model, temperature=0, seed=1) == greedy
    assert _sampled(tiny_model, temperature=0, seed=2, top_k=5, top_p=0.5) == greedy


def test_top_k_one_and_a_tiny_top_p_leave_only_the_best_token(tiny_model: ChatModel) -> None:
    greedy = _sampled(tiny_model, temperature=0)
    assert _sampled(tiny_model, temperature=1.5, top_k=1, seed=3) == greedy
    assert _sampled(tiny_model, temperature=1.5, top_p=1e-6, seed=3) == greedy


def test_a_strong_repetition_penalty_repeats_less(tiny_model: ChatModel) -> None:
    plain = _sampled(tiny_model, temperature=0)
    penalised = _sampled(tiny_model, temperature=0, repetition_penalty=10.0)
    assert penalised != plain
    assert len(set(penalised)) > len(set(plain))
