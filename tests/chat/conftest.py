"""A chat server: the real service with a fake Ollama (loopback) and real ONNX exports.

Its models: the fake Ollama's (`llama3.1:8b`, `llava:7b`, `slow:latest`, ...), `hf/tiny` (a tiny random
Llama) and `hf/SmolLM2-135M-Instruct` (the default model). Stream sessions go stale after 2 s so
recovery can be tested quickly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess, running

CHAT_ENV = {
    "STREAM_STALE_S": "2",
    "STREAM_FLUSH_INTERVAL_S": "0.1",
    "CHAT_MAX_TOKENS": "24",
    "HF_AUTO_EXPORT_DEFAULT": "0",
    "HF_NUM_THREADS": "1",
}


@pytest.fixture(scope="session")
def chat_ollama() -> Iterator[FakeOllama]:
    """The chat server's fake Ollama, for the whole session as the server is."""
    with FakeOllama() as server:
        yield server


@pytest.fixture(scope="session")
def chat_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_export: Path, default_export: Path) -> Path:
    """A models directory holding the tiny export and the default model (linked, not copied)."""
    folder = tmp_path_factory.mktemp("chat-models")
    for export in (tiny_export, default_export):
        (folder / export.name).symlink_to(export, target_is_directory=True)
    return folder


def chat_env(ollama: FakeOllama, models_dir: Path, **extra: str) -> dict[str, str]:
    return {**CHAT_ENV, "OLLAMA_HOST": ollama.url, "HF_MODELS_DIR": str(models_dir), **extra}


@pytest.fixture(scope="session")
def chat_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, chat_ollama: FakeOllama, chat_models_dir: Path
) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("chat"), database_url, chat_env(chat_ollama, chat_models_dir))
    with running(process):
        yield process


@pytest.fixture
def chat(chat_server: ServerProcess) -> Iterator[httpx.Client]:
    with chat_server.client(timeout=60) as client:
        yield client
