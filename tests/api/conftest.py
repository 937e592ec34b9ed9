"""The fuzzing runs' server: one per module and database, on the fake Ollama, separate from the shared one.

Fuzzers delete conversations, change the configuration and load models, which would leak into other
tests on a shared server. The only model provider is the fake Ollama on loopback, set through the
environment so that no configuration change over the API can point it elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess, create_postgres_database, drop_postgres_database, running


@pytest.fixture(scope="module")
def fuzz_ollama() -> Iterator[FakeOllama]:
    ollama = FakeOllama().start()
    yield ollama
    ollama.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fuzz_ollama: FakeOllama
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "sqlite":
        database_url, drop = f"sqlite:///{workdir / 'beth.sqlite3'}", None
    else:
        database_url = create_postgres_database()
        drop = database_url
    models_dir = workdir / "models"
    models_dir.mkdir()
    env = {
        "OLLAMA_HOST": fuzz_ollama.url,
        "HF_MODELS_DIR": str(models_dir),
        "HF_HUB_OFFLINE": "1",
        "STREAM_TIMEOUT_S": "10",
    }
    process = ServerProcess(workdir, database_url, env)
    with running(process):
        yield process
    if drop:
        drop_postgres_database(drop)
