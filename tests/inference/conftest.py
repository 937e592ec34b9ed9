"""Engine tests share one loaded tiny model (CPU, one thread) and run coroutines on asyncio through anyio."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inference import ChatModel, GenerationParams, RuntimeOptions

CPU_ONE_THREAD = RuntimeOptions(execution_provider="cpu", intra_op_num_threads=1)
GREEDY = GenerationParams(max_new_tokens=24, temperature=0)
PROMPTS = (
    [{"role": "user", "content": "Hello world! How are you today?"}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "write a haiku"}, {"role": "user", "content": "the quick brown fox"}],
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_model(tiny_export: Path) -> Iterator[ChatModel]:
    """The tiny fp32 export opened once; tests that patch it use `monkeypatch` so it is restored."""
    model = ChatModel.load(tiny_export, CPU_ONE_THREAD)
    yield model
    model.close()
