"""One instance of the service as another's OpenAI-compatible upstream: instance A has `[providers.b]
type = "openai"` pointing at instance B's `/v1` (with one of B's API keys). B's models are A's `b/<name>`, with
their context; A's clients chat with them through A's own `/v1`, streamed and not, and when B is stopped A's
fallback model answers instead."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, running
from tests.openai.conftest import CONFIG, client_of, models_dir, server_env

B_KEY = "b-serves-a"
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
#: the options the OpenAI API defines, which the openai provider forwards
OPTIONS = {"temperature": 0, "max_tokens": 12, "seed": 3}


@pytest.fixture(scope="module")
def instances(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, busy_openai_ollama: FakeOllama, tiny_export: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    b_dir, a_dir = tmp_path_factory.mktemp("upstream-b"), tmp_path_factory.mktemp("upstream-a")
    b_env = server_env(b_dir, busy_openai_ollama, models_dir(b_dir / "models", tiny_export), OPENAI_API_KEYS=B_KEY)
    b = ServerProcess(b_dir, database_url, b_env)
    with running(b):
        provider = f'[providers.b]\ntype = "openai"\nbase_url = "{b.url}/v1"\napi_key = "{B_KEY}"\ntimeout_s = 30\n'
        a_env = server_env(
            a_dir,
            busy_openai_ollama,
            models_dir(a_dir / "models", tiny_export),
            CONFIG + provider,
            FALLBACK_MODELS="hf/tiny",
        )
        with running(ServerProcess(a_dir, database_url, a_env)) as a:
            yield a, b


def test_a_second_instance_answers_through_the_first_and_the_fallback_when_it_stops(
    instances: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = instances
    with client_of(b, api_key=B_KEY) as direct, client_of(a) as through:
        listed = {m.id for m in wait_until(lambda: through.models.list().data, what="A's catalog")}
        assert "b/hf/tiny" in listed
        via_b = through.models.retrieve("b/hf/tiny")
        assert via_b.owned_by == "b"
        own = direct.chat.completions.create(model="hf/tiny", messages=ASK, **OPTIONS)  # type: ignore[arg-type]
        relayed = through.chat.completions.create(model="b/hf/tiny", messages=ASK, **OPTIONS)  # type: ignore[arg-type]
        assert relayed.model == "b/hf/tiny"
        assert relayed.choices[0].message.content == own.choices[0].message.content
        assert relayed.usage is not None
        assert relayed.usage.completion_tokens == own.usage.completion_tokens  # type: ignore[union-attr]
        streamed = through.chat.completions.create(
            model="b/hf/tiny",
            messages=ASK,  # type: ignore[arg-type]
            stream=True,
            **OPTIONS,  # type: ignore[arg-type]
        )
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert text == own.choices[0].message.content
        b.stop()
        fallback = through.chat.completions.create(model="b/hf/tiny", messages=ASK, **OPTIONS)  # type: ignore[arg-type]
        assert fallback.model == "hf/tiny"
        assert fallback.choices[0].message.content == own.choices[0].message.content  # the same tiny model
