"""A server on a fresh database of either kind, with the paced fake Ollama as its provider."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.fixtures.server import ServerProcess, create_postgres_database, drop_postgres_database
from tests.reliability.paced_ollama import PacedOllama

RELIABILITY_ENV = {
    "STREAM_STALE_S": "2",  # sessions of a killed process are recovered within seconds
    "STREAM_FLUSH_INTERVAL_S": "0.1",
    "HF_AUTO_EXPORT_DEFAULT": "0",
    "HF_NUM_THREADS": "1",
}


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of `kind` for one test: a SQLite file or a fresh PostgreSQL database (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'reliability.sqlite3'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@contextmanager
def serving(database_url: str, tmp_path: Path, ollama: PacedOllama, **env: str) -> Iterator[ServerProcess]:
    """The service on `database_url` with `ollama` as its Ollama; stopped (or already killed) afterwards."""
    server = ServerProcess(
        tmp_path / "server",
        database_url,
        {**RELIABILITY_ENV, "OLLAMA_HOST": ollama.url, "HF_MODELS_DIR": str(tmp_path / "no-models"), **env},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
