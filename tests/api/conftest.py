"""The fuzzing runs' server: one per module and database, on the fake Ollama, separate from the shared one.

Fuzzers delete conversations, change the configuration and load models, which would leak into other
tests on a shared server. The only model provider is the fake Ollama on loopback, set through the
environment so that no configuration change over the API can point it elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess, fresh_database, running


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, module_ollama: FakeOllama
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    models_dir = workdir / "models"
    models_dir.mkdir()
    env = {
        "OLLAMA_HOST": module_ollama.url,
        "HF_MODELS_DIR": str(models_dir),
        "HF_HUB_OFFLINE": "1",
        "STREAM_TIMEOUT_S": "10",
    }
    with (
        fresh_database(request.param, workdir) as database_url,
        running(ServerProcess(workdir, database_url, env)) as process,
    ):
        yield process
