"""Servers for the OpenAI-compatible API, driven by the official `openai` client over real HTTP.

`openai_server`: the real service on each database, with a fake Ollama (loopback), the tiny random Llama
(`hf/tiny`) and the default model (`hf/SmolLM2-135M-Instruct`), and no API keys (loopback clients only).
`keyed_server`: API keys set, an Ollama that lists its models but refuses every chat, and `hf/tiny` as the
fallback model. Stream sessions, conversations and messages must stay empty on both: the API is stateless.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess, database_kind, fresh_database, running

KEYS = ("key-one", "key-two")
#: the tiny tokenizer spends a token on nearly every character: a short system prompt leaves room to answer
SYSTEM = "Be brief."
CONFIG = f'[models."hf/tiny"]\nsystem_prompt = "{SYSTEM}"\n'
ENV = {
    "CHAT_MAX_TOKENS": "24",
    "HF_AUTO_EXPORT_DEFAULT": "0",
    "HF_NUM_THREADS": "1",
    "PROVIDER_RETRIES": "0",
}


def models_dir(folder: Path, *exports: Path) -> Path:
    """A models directory holding `exports` (linked, not copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for export in exports:
        (folder / export.name).symlink_to(export, target_is_directory=True)
    return folder


def server_env(
    workdir: Path, ollama: FakeOllama, models: Path, config_text: str = CONFIG, **extra: str
) -> dict[str, str]:
    config = workdir / "beth.toml"
    config.write_text(config_text)
    return {**ENV, "OLLAMA_HOST": ollama.url, "HF_MODELS_DIR": str(models), "BETH_CONFIG": str(config), **extra}


@pytest.fixture(scope="session")
def openai_ollama() -> Iterator[FakeOllama]:
    server = FakeOllama().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def busy_openai_ollama() -> Iterator[FakeOllama]:
    """An Ollama that lists its models but answers 503 to every chat: its models cannot start."""
    server = FakeOllama().start()
    server.mode = "busy"
    yield server
    server.stop()


@pytest.fixture(scope="session")
def openai_server(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    openai_ollama: FakeOllama,
    tiny_export: Path,
    default_export: Path,
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("openai")
    models = models_dir(workdir / "models", tiny_export, default_export)
    with (
        fresh_database(database_kind(database_url), workdir) as own_database,  # what it stores is its own
        running(ServerProcess(workdir, own_database, server_env(workdir, openai_ollama, models))) as process,
    ):
        yield process


@pytest.fixture(scope="session")
def keyed_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, busy_openai_ollama: FakeOllama, tiny_export: Path
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("openai-keyed")
    models = models_dir(workdir / "models", tiny_export)
    # greedy: a sampled first token of the tiny random model may be its end, an empty reply
    config = CONFIG + "options = { temperature = 0 }\n"
    env = server_env(
        workdir, busy_openai_ollama, models, config, OPENAI_API_KEYS=",".join(KEYS), FALLBACK_MODELS="hf/tiny"
    )
    with (
        fresh_database(database_kind(database_url), workdir) as own_database,
        running(ServerProcess(workdir, own_database, env)) as process,
    ):
        yield process


def client_of(server: ServerProcess, api_key: str = "unused") -> openai.OpenAI:
    """The official client on the server's `/v1`; no retries, so each error is the server's first answer."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0, timeout=120)


@pytest.fixture
def client(openai_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with client_of(openai_server) as opened:
        yield opened


def http_of(server: ServerProcess) -> httpx.Client:
    """A plain httpx client on the server: raw requests and answers, beside the official client."""
    return httpx.Client(base_url=server.url, timeout=120)


@pytest.fixture
def http(openai_server: ServerProcess) -> Iterator[httpx.Client]:
    with http_of(openai_server) as opened:
        yield opened
