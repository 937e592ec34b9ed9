"""A server whose configuration file the tests edit, with two fake Ollamas to re-point it between."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.config_files import write_config
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess, database_kind, fresh_database, running

CONFIG_ENV = {
    "CONFIG_RELOAD_INTERVAL_S": "0.2",
    "CHAT_MAX_TOKENS": "24",
    "CATALOG_TTL_S": "0.2",
    "HF_AUTO_EXPORT_DEFAULT": "0",
    "STREAM_FLUSH_INTERVAL_S": "0.1",
}
TOML_BODY = {"Content-Type": "application/toml"}
"""The content type the restore and validate endpoints want for a TOML text."""


def first_config(ollama: FakeOllama) -> str:
    return f'ollama_host = "{ollama.url}"\nsystem_prompt = "You are the first prompt."\n'


@pytest.fixture(scope="module")
def ollamas(module_ollama: FakeOllama) -> Iterator[tuple[FakeOllama, FakeOllama]]:
    with FakeOllama() as second:
        yield module_ollama, second


@pytest.fixture(scope="module")
def config_database_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this module's own, of the session's kind: changes made through the API are stored
    and brought back at the next start, so they must not reach the other tests' servers."""
    with fresh_database(database_kind(database_url), tmp_path_factory.mktemp("config-db")) as url:
        yield url


@pytest.fixture(scope="module")
def config_server(
    config_database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    ollamas: tuple[FakeOllama, FakeOllama],
    tiny_export: Path,
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("config")
    # the default models directory (<data dir>/models), so that the file may re-point it
    (workdir / "data" / "models").mkdir(parents=True)
    (workdir / "data" / "models" / "tiny").symlink_to(tiny_export, target_is_directory=True)
    config = workdir / "beth.toml"
    write_config(config, first_config(ollamas[0]))
    env = {**CONFIG_ENV, "BETH_CONFIG": str(config)}
    process = ServerProcess(workdir, config_database_url, env)
    with running(process):
        yield process


@pytest.fixture
def admin(config_server: ServerProcess) -> Iterator[httpx.Client]:
    with config_server.client() as client:
        yield client


def config_file(server: ServerProcess) -> Path:
    return Path(server.env["BETH_CONFIG"])
