"""Drafted tokens (prompt lookup): checked in one step, kept only where greedy agrees, rewound otherwise."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inference import ChatModel, GenerationParams, GenerationResult, InferenceError, OnnxCausalLM
from inference.lookahead import MAX_LOOKAHEAD_TOKENS, STEP_COST_PRIOR, PromptLookup, StepCosts
from inference.run import GenerationRun
from tests.inference.conftest import CPU_ONE_THREAD, PROMPTS

GREEDY_LONG = GenerationParams(max_new_tokens=64, temperature=0)
# random weights repeat themselves soon under greedy decoding, which is what lookup drafts from
REPEATING = [{"role": "user", "content": "one two three one two three one two three one two three"}]


def test_lookup_drafts_what_followed_the_latest_earlier_occurrence_of_the_tail() -> None:
    lookup = PromptLookup(max_tokens=3)
    lookup.extend([5, 6, 7, 8, 9, 5, 6, 7, 1, 2, 5, 6])
    assert lookup.draft(10) == [7, 1, 2]  # (5, 6) last came before 7, 1, 2, not before 7, 8, 9
    assert lookup.draft(2) == [7, 1]
    lookup.extend([7])
    assert lookup.draft(10) == [1, 2, 5]  # the 3-gram (5, 6, 7) wins over the 2-gram (6, 7)


def test_lookup_drafts_nothing_without_a_match_of_two_tokens() -> None:
    lookup = PromptLookup(max_tokens=4)
    assert lookup.draft(4) == []
    lookup.extend([1, 2, 3, 4, 3])  # only the single token 3 repeats
    assert lookup.draft(4) == []
    lookup.extend([4])
    assert lookup.draft(4) == [3, 4]  # what followed (3, 4), up to the end of what is known
    assert lookup.draft(0) == []


def test_drafts_are_cut_to_what_they_are_likely_to_save() -> None:
    lookup = PromptLookup(max_tokens=4)
    lookup.extend([1, 2, 3, 4, 5, 6, 1, 2])
    assert lookup.draft(4, lambda count: 1.0) == [3, 4, 5, 6]  # free extra tokens: all of them
    assert lookup.draft(4, lambda count: 1.0 + 10 * (count - 1)) == []  # dear ones: none
    modest = lambda count: 1.0 + 0.25 * (count - 1)  # noqa: E731
    for _ in range(20):
        lookup.record(4, 4)
    assert lookup.draft(4, modest) == [3, 4, 5, 6]  # drafts have been kept: worth checking
    for _ in range(60):
        lookup.record(4, 0)
    assert lookup.draft(4, modest) == []  # drafts keep failing: not worth a dearer step


def test_step_costs_come_from_timed_steps() -> None:
    costs = StepCosts()
    assert costs.cost(3) == 1 + 2 * STEP_COST_PRIOR
    costs.record(1, 0.010)
    costs.record(3, 0.015)
    assert costs.cost(3) == pytest.approx(1.5)
    assert costs.cost(1) == 1.0
    costs.record(MAX_LOOKAHEAD_TOKENS + 2, 1.0)  # longer than any draft: a prompt piece, not recorded
    assert set(costs.seconds) == {1, 3}


def test_a_model_times_the_steps_its_generations_run(tiny_export: Path) -> None:
    model = ChatModel.load(tiny_export, CPU_ONE_THREAD)
    try:
        model.generate_chat(REPEATING, GREEDY_LONG)
        assert 1 in model.step_costs.seconds
        assert max(model.step_costs.seconds) <= MAX_LOOKAHEAD_TOKENS + 1  # the prompt's step is not timed
    finally:
        model.close()


class NoDrafts:
    """The tiny model with every generation's drafting off (drafting is a generation's own policy)."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model

    def start_chat(self, messages: list[dict[str, str]], params: GenerationParams) -> GenerationRun:
        return self.model.start_chat(messages, dataclasses.replace(params, lookahead_tokens=0))

    def generate_chat(self, messages: list[dict[str, str]], params: GenerationParams) -> GenerationResult:
        return self.model.generate_chat(messages, dataclasses.replace(params, lookahead_tokens=0))


@pytest.fixture(scope="module")
def plain_model(tiny_export: Path) -> Iterator[NoDrafts]:
    model = ChatModel.load(tiny_export, CPU_ONE_THREAD)
    yield NoDrafts(model)
    model.close()


@pytest.fixture
def drafting(tiny_model: ChatModel, monkeypatch: pytest.MonkeyPatch) -> ChatModel:
    """The tiny model drafting whatever lookup finds: whether a draft is worth its step is decided from timed
    step costs (tested above), which a busy machine makes noisy, and must not decide whether these tests,
    about what drafting produces, draft at all."""
    monkeypatch.setattr(tiny_model.step_costs, "cost", lambda count: 1.0)
    return tiny_model


def test_an_export_can_check_drafts_on_cpu(tiny_model: ChatModel) -> None:
    assert tiny_model.model.verifies_drafts


def test_several_positions_of_logits_equal_one_step_each(tiny_model: ChatModel) -> None:
    model = tiny_model.model
    prompt = tiny_model.tokenizer.encode("the quick brown fox jumps")
    together = model.new_sequence()
    model.forward(together, prompt[:-1])
    batched = model.forward(together, [prompt[-1], 7, 8, 9], logits_to_keep=4)
    alone = model.new_sequence()
    model.forward(alone, prompt[:-1])
    single = [model.forward(alone, [token])[0] for token in (prompt[-1], 7, 8, 9)]
    assert batched.shape == (4, single[0].size)
    np.testing.assert_allclose(batched, np.stack(single), atol=1e-4)


def test_a_rewound_cache_ignores_the_dropped_positions(tiny_model: ChatModel) -> None:
    model = tiny_model.model
    prompt = tiny_model.tokenizer.encode("the quick brown fox jumps")
    rewound = model.new_sequence()
    model.forward(rewound, prompt)
    model.forward(rewound, [11, 12, 13, 14], logits_to_keep=4)
    model.rewind(rewound, len(prompt) + 1)  # keep 11, drop 12 13 14
    after = [model.forward(rewound, tokens, logits_to_keep=len(tokens)) for tokens in ([15], [16, 17, 18, 19, 20])]
    fresh = model.new_sequence()
    model.forward(fresh, [*prompt, 11])
    expected = [model.forward(fresh, tokens, logits_to_keep=len(tokens)) for tokens in ([15], [16, 17, 18, 19, 20])]
    for got, want in zip(after, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert rewound.length == fresh.length == len(prompt) + 7


def test_rewinding_forward_is_refused(tiny_model: ChatModel) -> None:
    model = tiny_model.model
    state = model.new_sequence()
    model.forward(state, [1, 2, 3])
    with pytest.raises(InferenceError):
        model.rewind(state, 4)
    with pytest.raises(InferenceError):
        model.forward(state, [4, 5], logits_to_keep=3)


def test_a_graph_without_the_input_checks_no_drafts(tiny_export: Path) -> None:
    from inference.export_folder import read_export

    info = dataclasses.replace(read_export(tiny_export), graph_rewrites=())
    model = OnnxCausalLM(info, CPU_ONE_THREAD)
    assert not model.verifies_drafts
    with pytest.raises(InferenceError):
        model.forward(model.new_sequence(), [1, 2], logits_to_keep=2)


@pytest.mark.parametrize("messages", [REPEATING, *PROMPTS])
def test_drafting_keeps_the_greedy_tokens_in_fewer_steps(
    drafting: ChatModel, plain_model: NoDrafts, messages: list[dict[str, str]]
) -> None:
    drafted = drafting.start_chat(messages, GREEDY_LONG)
    steps = sum(1 for _ in _steps(drafted))
    plain = plain_model.start_chat(messages, GREEDY_LONG)
    plain_steps = sum(1 for _ in _steps(plain))
    assert drafted.result is not None
    assert plain.result is not None
    assert drafted.result.token_ids == plain.result.token_ids
    assert drafted.result.text == plain.result.text
    assert plain.generator.lookup is None
    if messages is REPEATING:
        assert drafted.generator.accepted_tokens > 0
        assert steps == plain_steps - drafted.generator.accepted_tokens < plain_steps


def test_drafting_is_each_generations_own_policy(drafting: ChatModel) -> None:
    drafted = drafting.start_chat(REPEATING, GREEDY_LONG)
    plain = drafting.start_chat(REPEATING, dataclasses.replace(GREEDY_LONG, lookahead_tokens=0))
    list(drafted.events())
    list(plain.events())
    assert drafted.generator.accepted_tokens > 0
    assert plain.generator.lookup is None
    assert plain.generator.accepted_tokens == 0
    assert drafted.result is not None
    assert plain.result is not None
    assert drafted.result.token_ids == plain.result.token_ids
    with pytest.raises(InferenceError, match="lookahead_tokens"):
        GenerationParams(lookahead_tokens=MAX_LOOKAHEAD_TOKENS + 1)


def test_sampling_drafts_too_and_a_seed_gives_the_text_it_gives_without_drafts(
    drafting: ChatModel, plain_model: NoDrafts
) -> None:
    # the tiny model's random weights give flat distributions: only a low temperature makes drafts likely
    for seed in (3, 4, 5):
        params = GenerationParams(max_new_tokens=48, temperature=0.01, seed=seed)
        drafted = drafting.start_chat(REPEATING, params)
        list(drafted.events())
        plain = plain_model.generate_chat(REPEATING, params)
        assert drafted.generator.accepted_tokens > 0
        assert drafted.result is not None
        assert (drafted.result.text, drafted.result.token_ids) == (plain.text, plain.token_ids)


def test_a_stop_string_inside_a_drafted_step_drops_the_tokens_after_it(
    drafting: ChatModel, plain_model: NoDrafts, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = _picked_per_step(drafting, GREEDY_LONG, monkeypatch)[0]
    stops = []
    kept = 0  # tokens of the steps before
    for picked in steps:
        for index in range(kept, kept + len(picked) - 1):  # a token with kept drafts after it in its step
            text = drafting.tokenizer.decode(_flat(steps)[: index + 1])
            stop = text[-6:]
            if stop.strip() and stop.isprintable() and text.find(stop) + len(stop) == len(text):
                stops.append(stop)  # first seen at that token: the run must stop there
        kept += len(picked)
    assert len(stops) >= 2
    for stop in stops[:4]:
        params = dataclasses.replace(GREEDY_LONG, stop_strings=(stop,))
        picked_steps, drafted = _picked_per_step(drafting, params, monkeypatch)
        plain = plain_model.generate_chat(REPEATING, params)
        assert (drafted.text, drafted.token_ids, drafted.finish_reason) == (plain.text, plain.token_ids, "stop")
        assert drafted.usage.completion_tokens == plain.usage.completion_tokens == len(plain.token_ids)
        assert len(_flat(picked_steps)) > len(drafted.token_ids)  # the step went on past the stop


def _picked_per_step(
    model: ChatModel, params: GenerationParams, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[list[int]], GenerationResult]:
    """The tokens each step of a greedy chat on REPEATING picked, and its result."""
    run = model.start_chat(REPEATING, params)
    picked: list[list[int]] = []
    generate = run.generator.generate_next_tokens
    monkeypatch.setattr(run.generator, "generate_next_tokens", lambda: picked.append(generate()) or picked[-1])
    result = list(run.events())[-1]
    assert isinstance(result, GenerationResult)
    return picked, result


def _flat(steps: list[list[int]]) -> list[int]:
    return [token for step in steps for token in step]


def _steps(run: GenerationRun) -> Iterator[None]:
    """Drive `run` to its end, one model step at a time (prefill pieces included)."""
    while not run.done:
        run.step()
        yield None
