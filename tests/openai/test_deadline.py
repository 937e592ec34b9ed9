"""A reply past its deadline (`stream_timeout_s`, the chat turn's one deadline) through `/v1`: a 504 when it
is not streamed, an error object ending the stream when it is; either way the model stops and the usage counts
a reply stopped by its deadline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, running
from tests.openai.conftest import client_of, models_dir, server_env

SLOW = "slow:latest"  # one word every 0.2 s, for a long time
ASK = [{"role": "user", "content": "Take your time."}]


@pytest.fixture(scope="module")
def hurried_server(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory, openai_ollama: FakeOllama, tiny_export: Path
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("openai-deadline")
    env = server_env(workdir, openai_ollama, models_dir(workdir / "models", tiny_export), STREAM_TIMEOUT_S="2")
    with running(ServerProcess(workdir, module_database_url, env)) as process:
        yield process


def test_a_reply_past_its_deadline_is_a_timeout_error(hurried_server: ServerProcess, openai_ollama: FakeOllama) -> None:
    left = openai_ollama.disconnects.count(SLOW)
    with client_of(hurried_server) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=SLOW, messages=ASK)  # type: ignore[arg-type]
        assert (caught.value.status_code, caught.value.code) == (504, "timeout")
    body = {"model": SLOW, "messages": ASK, "stream": True}
    with httpx.stream("POST", f"{hurried_server.url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert any(json.loads(line)["choices"][0]["delta"].get("content") for line in lines[:-1])  # words came first
    assert json.loads(lines[-1])["error"]["code"] == "timeout"
    wait_until(lambda: openai_ollama.disconnects.count(SLOW) == left + 2, what="the slow model's requests stopped")
    usage = httpx.get(f"{hurried_server.url}/api/v1/usage", params={"period": "hour", "model": "ollama/" + SLOW})
    assert usage.json()["totals"]["cancelled"] == 2  # both stopped by the deadline, partial replies
