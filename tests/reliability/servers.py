"""A server on a fresh database of either kind, with the paced fake Ollama as its provider."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.server import ServerProcess, running
from tests.reliability.paced_ollama import PacedOllama

RELIABILITY_ENV = {
    "STREAM_STALE_S": "2",  # sessions of a killed process are recovered within seconds
    "STREAM_FLUSH_INTERVAL_S": "0.1",
    "HF_AUTO_EXPORT_DEFAULT": "0",
    "HF_NUM_THREADS": "1",
}


@contextmanager
def serving(database_url: str, tmp_path: Path, ollama: PacedOllama, **env: str) -> Iterator[ServerProcess]:
    """The service on `database_url` with `ollama` as its Ollama; stopped (or already killed) afterwards."""
    server = ServerProcess(
        tmp_path / "server",
        database_url,
        {**RELIABILITY_ENV, "OLLAMA_HOST": ollama.url, "HF_MODELS_DIR": str(tmp_path / "no-models"), **env},
    )
    with running(server):
        yield server
