"""pytest-benchmark suite (`pytest benchmarks`; never part of the test run): our engine on the default model.

Decode (128 greedy tokens after a 32-token prompt) and prefill (time to first token, 32 and 1000 tokens) for
the fp32 and int4 exports on 2 CPU threads. `python -m benchmarks.compare` puts Optimum and PyTorch beside it.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import runners
from benchmarks.models import LOOKAHEAD_TOKENS, NEW_TOKENS, PROMPT_LENGTHS, VARIANTS, export_folder, prompt_ids


@pytest.fixture(scope="module", params=list(VARIANTS))
def engine(request: pytest.FixtureRequest) -> tuple[runners.Generate, dict[int, list[int]]]:
    from inference import ChatTokenizer

    folder = export_folder(request.param)
    encode = ChatTokenizer(folder).encode
    return runners.engine(folder, LOOKAHEAD_TOKENS), {length: prompt_ids(encode, length) for length in PROMPT_LENGTHS}


def test_decode_128_tokens(benchmark: Any, engine: tuple[runners.Generate, dict[int, list[int]]]) -> None:
    generate, prompts = engine
    result = benchmark.pedantic(generate, args=(prompts[32], NEW_TOKENS), rounds=5, warmup_rounds=1)
    assert result.usage.completion_tokens == NEW_TOKENS
    benchmark.extra_info["decode_tokens_per_s"] = result.usage.decode_tokens_per_s


@pytest.mark.parametrize("length", PROMPT_LENGTHS)
def test_time_to_first_token(
    benchmark: Any, engine: tuple[runners.Generate, dict[int, list[int]]], length: int
) -> None:
    generate, prompts = engine
    result = benchmark.pedantic(generate, args=(prompts[length], 1), rounds=5, warmup_rounds=1)
    assert result.usage.prompt_tokens == length
