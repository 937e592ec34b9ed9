"""Who may use `/v1`: with API keys, a request sends one of them; without, loopback clients only, as the admin
endpoints. And a model that cannot start is answered by the fallback model before the first token."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures.server import ServerProcess
from tests.openai.conftest import KEYS, SYSTEM, client_of

HELLO = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello"}]


def test_with_keys_a_request_needs_one_of_them(keyed_server: ServerProcess) -> None:
    for key in KEYS:
        with client_of(keyed_server, api_key=key) as client:
            assert "hf/tiny" in [m.id for m in client.models.list().data]
            reply = client.chat.completions.create(model="hf/tiny", messages=HELLO, max_tokens=2)
            assert reply.choices[0].message.content is not None
    with client_of(keyed_server, api_key="key-three") as client:
        for call in (
            client.models.list,
            lambda: client.chat.completions.create(model="hf/tiny", messages=HELLO, max_tokens=2),
        ):
            with pytest.raises(openai.AuthenticationError) as caught:
                call()
            assert caught.value.status_code == 401
            assert (caught.value.type, caught.value.code) == ("invalid_request_error", "invalid_api_key")
            assert "key-" not in str(caught.value.body)  # no key, given or known, is echoed
    unsent = httpx.get(f"{keyed_server.url}/v1/models")
    assert unsent.status_code == 401
    assert unsent.json()["error"]["code"] == "invalid_api_key"
    logs = keyed_server.logs()
    assert not any(key in logs for key in (*KEYS, "key-three"))  # never logged
    shown = httpx.get(f"{keyed_server.url}/api/v1/config").json()  # an admin endpoint: this loopback client
    assert shown["settings"]["openai_api_keys"]["value"] == "***"
    assert not any(key in str(shown) for key in KEYS)


def test_a_model_that_cannot_start_is_answered_by_the_fallback(keyed_server: ServerProcess) -> None:
    with client_of(keyed_server, api_key=KEYS[0]) as client:
        reply = client.chat.completions.create(model="llama3.1:8b", messages=HELLO, max_tokens=3)
        assert reply.model == "hf/tiny"
        assert reply.choices[0].message.content
        chunks = list(client.chat.completions.create(model="ollama/llama3.1:8b", messages=HELLO, stream=True))
        assert {chunk.model for chunk in chunks} == {"hf/tiny"}
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_without_keys_only_loopback_clients_that_name_a_loopback_host(openai_server: ServerProcess) -> None:
    with client_of(openai_server, api_key="anything") as client:
        assert client.models.list().data  # a loopback client: any key or none
    # a name that is not loopback may be DNS rebinding a browser page onto this service
    with openai.OpenAI(
        base_url=f"{openai_server.url}/v1",
        api_key="anything",
        max_retries=0,
        default_headers={"Host": f"example.com:{openai_server.port}"},
    ) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(model="hf/tiny", messages=HELLO)
        assert caught.value.code == "host_not_loopback"
        assert "OPENAI_API_KEYS" in caught.value.message
    foreign = httpx.post(
        f"{openai_server.url}/v1/chat/completions",
        json={"model": "hf/tiny", "messages": HELLO},
        headers={"Origin": "http://pages.example"},
    )
    assert foreign.status_code == 403
    assert foreign.json()["error"]["type"] == "permission_error"
