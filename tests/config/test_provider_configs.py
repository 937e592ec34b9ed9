"""Provider tables set through the API (`/api/v1/providers/<name>/config`) against a real server, on SQLite and
PostgreSQL: applied at once, validated like the config file, stored in `provider_configs` across restarts, under
the file's precedence rule, and rolled back with a revision restore."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.api.test_graphql_web_client import create_conversation
from tests.config.conftest import TOML_BODY, config_file, first_config
from tests.fixtures.config_files import write_config
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.openai_upstream import FakeOpenAI
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, query_sql
from tests.fixtures.web_client import stream_message


def model_names(client: httpx.Client) -> list[str]:
    return [model["name"] for model in client.get("/api/v1/models").json()["models"]]


def stored_rows(server: ServerProcess) -> dict[str, tuple[str, bool, dict]]:
    """`provider_configs` as the database holds it, read behind the service's back: name -> kind, enabled, settings."""
    rows = query_sql(server.database_url, "SELECT name, kind, enabled, settings FROM provider_configs")
    return {
        name: (kind, bool(enabled), json.loads(settings) if isinstance(settings, str) else settings)
        for name, kind, enabled, settings in rows
    }


def newest_revision(client: httpx.Client) -> dict:
    return client.get("/api/v1/config/revisions").json()["revisions"][0]


def asks(ollama: FakeOllama, text: str) -> bool:
    return any(request["messages"][-1]["content"] == text for request in ollama.chats())


@pytest.fixture
def clean(admin: httpx.Client, config_server: ServerProcess, ollamas: tuple[FakeOllama, FakeOllama]) -> Iterator[None]:
    """Each test starts and leaves with the first config file and no provider table set through the API."""
    yield
    for name in admin.get("/api/v1/config").json()["providers"]:
        admin.delete(f"/api/v1/providers/{name}/config")
    write_config(config_file(config_server), first_config(ollamas[0]))
    wait_until(lambda: admin.get("/api/v1/config").json()["providers"] == {})


def test_a_provider_put_through_the_api_serves_its_models_survives_a_restart_and_goes_when_deleted(
    admin: httpx.Client, config_server: ServerProcess, ollamas: tuple[FakeOllama, FakeOllama], clean: None
) -> None:
    first, second = ollamas
    response = admin.put(
        "/api/v1/providers/gpu-box/config", json={"type": "ollama", "host": second.url, "timeoutS": 30}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = {
        "type": "ollama",
        "enabled": True,
        "timeoutS": 30.0,
        "source": "api",
        "host": second.url,
        "numCtx": 8192,
        "keepAliveS": 300.0,
    }
    assert body["provider"] == expected
    assert (body["revision"]["source"], body["revision"]["applied"]) == ("api", True)
    assert body["revision"]["diff"]["providers.gpu-box.host"] == {"from": None, "to": second.url}
    assert newest_revision(admin)["id"] == body["revision"]["id"]

    # applied at once: its models are listed under its name, and a turn reaches its host
    wait_until(lambda: "gpu-box/llama3.1:8b" in model_names(admin))
    assert admin.get("/api/v1/providers/gpu-box/config").json() == expected
    assert admin.get("/api/v1/providers/configs").json() == {"providers": {"gpu-box": expected}, "count": 1}
    assert admin.get("/api/v1/config").json()["providers"]["gpu-box"]["source"] == "api"
    conversation = create_conversation(admin, model="gpu-box/llama3.1:8b")
    reply = stream_message(admin, model="gpu-box/llama3.1:8b", message="to the box", conversation_id=conversation)
    assert reply.error is None, reply.error_payload
    assert reply.text == "Hello from llama3.1:8b!"
    assert asks(second, "to the box")
    assert not asks(first, "to the box")

    # stored in its own row, as it was given
    table = {"type": "ollama", "host": second.url, "timeout_s": 30}
    assert stored_rows(config_server) == {"gpu-box": ("ollama", True, table)}

    # a PUT replaces the whole table: what it leaves out is the default again
    replaced = admin.put(
        "/api/v1/providers/gpu-box/config", json={"type": "ollama", "host": second.url, "numCtx": 4096}
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["provider"]["timeoutS"], replaced.json()["provider"]["numCtx"]) == (120.0, 4096)
    assert stored_rows(config_server) == {
        "gpu-box": ("ollama", True, {"type": "ollama", "host": second.url, "num_ctx": 4096})
    }

    # read back from the database at the next start
    config_server.restart()
    with httpx.Client(base_url=config_server.url, timeout=30) as client:
        assert client.get("/api/v1/providers/gpu-box/config").json() == {**expected, "timeoutS": 120.0, "numCtx": 4096}
        wait_until(lambda: "gpu-box/llama3.1:8b" in model_names(client))
        again = stream_message(
            client, model="gpu-box/llama3.1:8b", message="after a restart", conversation_id=conversation
        )
        assert again.text == "Hello from llama3.1:8b!"
        assert asks(second, "after a restart")

        removed = client.delete("/api/v1/providers/gpu-box/config")
        assert removed.status_code == 200, removed.text
        assert removed.json()["provider"] is None
        assert removed.json()["revision"]["diff"]["providers.gpu-box.host"] == {"from": second.url, "to": None}
        wait_until(lambda: "gpu-box/llama3.1:8b" not in model_names(client))
        missing = client.get("/api/v1/providers/gpu-box/config")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "NOT_FOUND")
        again = client.delete("/api/v1/providers/gpu-box/config")
        assert (again.status_code, again.json()["error"]["code"]) == (404, "NOT_FOUND")
        assert stored_rows(config_server) == {}
        gone = stream_message(client, model="gpu-box/llama3.1:8b", message="anyone?", conversation_id=conversation)
        assert gone.error is not None
        assert not asks(second, "anyone?")

    # and it stays gone at the next start
    config_server.restart()
    with httpx.Client(base_url=config_server.url, timeout=30) as client:
        assert client.get("/api/v1/providers/configs").json() == {"providers": {}, "count": 0}
        assert "gpu-box" not in client.get("/api/v1/config").json()["providers"]


def test_an_invalid_provider_table_is_refused_as_in_the_file_and_changes_nothing(
    admin: httpx.Client, config_server: ServerProcess, ollamas: tuple[FakeOllama, FakeOllama], clean: None
) -> None:
    before = admin.get("/api/v1/config").json()
    revisions_before = len(admin.get("/api/v1/config/revisions").json()["revisions"])

    bad = admin.put("/api/v1/providers/gpu/config", json={"type": "ollama", "host": "not a url", "timeoutS": "soon"})
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert error["code"] == "INVALID_REQUEST"
    from_api = {(e["key"], e["value"], e["reason"]) for e in error["details"]["errors"]}
    assert {e["source"] for e in error["details"]["errors"]} == {"api"}
    # the same table in the config file is refused with the same keys, values and reasons
    as_file = admin.post(
        "/api/v1/config/validate",
        content='[providers.gpu]\ntype = "ollama"\nhost = "not a url"\ntimeout_s = "soon"\n',
        headers=TOML_BODY,
    ).json()
    assert as_file["valid"] is False
    assert {(e["key"], e["value"], e["reason"]) for e in as_file["errors"]} == from_api
    assert {key for key, _, _ in from_api} == {"providers.gpu.host", "providers.gpu.timeout_s"}

    refusals = {
        "providers.gpu.host": admin.put("/api/v1/providers/gpu/config", json={"type": "ollama"}),
        "providers.gpu.type": admin.put("/api/v1/providers/gpu/config", json={"type": "lmstudio", "host": "http://x"}),
        "providers.hf": admin.put("/api/v1/providers/hf/config", json={"type": "ollama", "host": "http://x"}),
        "providers.ollama": admin.put("/api/v1/providers/ollama/config", json={"type": "ollama", "host": "http://x"}),
        "providers.Big Box": admin.put("/api/v1/providers/Big Box/config", json={"type": "ollama", "host": "http://x"}),
    }
    for key, refused in refusals.items():
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "INVALID_REQUEST"
        assert key in [e["key"] for e in refused.json()["error"]["details"]["errors"]], refused.text

    # a key the JSON shape does not have at all is refused before it reaches the configuration
    unknown = admin.put("/api/v1/providers/gpu/config", json={"type": "ollama", "host": "http://x", "timeout": 3})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "INVALID_REQUEST")

    # a key that is secret is never repeated back, stored in the history or logged, even when refused
    secret = "sk-do-not-repeat-me"
    keyed = admin.put("/api/v1/providers/gpu/config", json={"type": "ollama", "host": "http://x", "apiKey": secret})
    assert keyed.status_code == 400, keyed.text
    assert {"key": "providers.gpu.api_key", "value": "***"} in [
        {"key": e["key"], "value": e["value"]} for e in keyed.json()["error"]["details"]["errors"]
    ]
    assert secret not in keyed.text
    assert secret not in admin.get("/api/v1/config/revisions").text
    assert secret not in config_server.logs()

    after = admin.get("/api/v1/config").json()
    assert after["providers"] == before["providers"] == {}
    assert after["settings"] == before["settings"]
    assert stored_rows(config_server) == {}
    revisions = admin.get("/api/v1/config/revisions").json()["revisions"]
    refused_revisions = revisions[: len(revisions) - revisions_before]
    assert len(refused_revisions) == 7  # every refusal the configuration saw is in the history
    assert all((r["source"], r["valid"], r["applied"]) == ("api", False, False) for r in refused_revisions)


def test_an_api_table_goes_over_the_files_and_deleting_it_brings_the_files_back(
    admin: httpx.Client, config_server: ServerProcess, ollamas: tuple[FakeOllama, FakeOllama], clean: None
) -> None:
    first, second = ollamas
    write_config(
        config_file(config_server),
        first_config(first) + f'\n[providers.box]\ntype = "ollama"\nhost = "{second.url}"\ntimeout_s = 30\n',
    )
    wait_until(lambda: "box/llama3.1:8b" in model_names(admin))
    from_file = admin.get("/api/v1/providers/box/config").json()
    assert (from_file["source"], from_file["host"], from_file["timeoutS"]) == ("file", second.url, 30.0)
    # a table of the file is the file's to remove
    refused = admin.delete("/api/v1/providers/box/config")
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "CONFLICT")
    assert "config file" in refused.json()["error"]["message"]

    # like every API value, an API table goes over the file's, and replaces it whole (timeout_s is the default)
    put = admin.put("/api/v1/providers/box/config", json={"type": "ollama", "host": first.url})
    assert put.status_code == 200, put.text
    assert (put.json()["provider"]["source"], put.json()["provider"]["host"]) == ("api", first.url)
    assert put.json()["provider"]["timeoutS"] == 120.0
    conversation = create_conversation(admin, model="box/llama3.1:8b")
    reply = stream_message(admin, model="box/llama3.1:8b", message="which box?", conversation_id=conversation)
    assert reply.text == "Hello from llama3.1:8b!"
    assert asks(first, "which box?")
    assert not asks(second, "which box?")
    # a change of the file leaves the API table in effect
    write_config(
        config_file(config_server),
        first_config(first) + f'\n[providers.box]\ntype = "ollama"\nhost = "{second.url}"\ntimeout_s = 31\n',
    )
    wait_until(lambda: newest_revision(admin)["source"] == "file")
    assert admin.get("/api/v1/providers/box/config").json()["host"] == first.url

    # deleting the API table brings the file's back
    removed = admin.delete("/api/v1/providers/box/config")
    assert removed.status_code == 200, removed.text
    assert removed.json()["provider"] == {**from_file, "timeoutS": 31.0}
    assert stored_rows(config_server) == {}
    later = stream_message(admin, model="box/llama3.1:8b", message="the file's box", conversation_id=conversation)
    assert later.text == "Hello from llama3.1:8b!"
    assert asks(second, "the file's box")


def test_a_revision_is_restored_through_the_configuration_service(
    admin: httpx.Client, config_server: ServerProcess, ollamas: tuple[FakeOllama, FakeOllama], clean: None
) -> None:
    first, second = ollamas
    marked = admin.patch("/api/v1/config", json={"systemPrompt": "As it was"})
    assert marked.status_code == 200, marked.text
    as_it_was = marked.json()["revision"]["id"]
    assert admin.patch("/api/v1/config", json={"systemPrompt": "Changed since"}).status_code == 200
    put = admin.put("/api/v1/providers/later/config", json={"type": "ollama", "host": second.url})
    assert put.status_code == 200, put.text
    with_provider = put.json()["revision"]["id"]
    wait_until(lambda: "later/llama3.1:8b" in model_names(admin))

    restored = admin.post(f"/api/v1/config/revisions/{as_it_was}/restore")
    assert restored.status_code == 200, restored.text
    revision = restored.json()["revision"]
    assert (revision["source"], revision["valid"], revision["applied"]) == ("restore", True, True)
    assert revision["id"] > with_provider
    assert revision["diff"]["system_prompt"] == {"from": "Changed since", "to": "As it was"}
    config = restored.json()["config"]
    # restored as a backup of that moment is: into the file, with the API values it had then
    assert (config["settings"]["system_prompt"]["value"], config["settings"]["system_prompt"]["source"]) == (
        "As it was",
        "file",
    )
    assert config["settings"]["ollama_host"]["value"] == first.url
    assert "later" not in config["providers"]
    assert 'system_prompt = "As it was"' in config_file(config_server).read_text()
    assert newest_revision(admin)["id"] == revision["id"]
    wait_until(lambda: "later/llama3.1:8b" not in model_names(admin))
    assert stored_rows(config_server) == {}

    # and forward again, to the revision that added the provider: it comes back, now in the file
    forward = admin.post(f"/api/v1/config/revisions/{with_provider}/restore")
    assert forward.status_code == 200, forward.text
    assert forward.json()["config"]["providers"]["later"]["source"] == "file"
    assert forward.json()["config"]["settings"]["system_prompt"]["value"] == "Changed since"
    wait_until(lambda: "later/llama3.1:8b" in model_names(admin))

    # what cannot be restored says so, and changes nothing
    refused_patch = admin.patch("/api/v1/config", json={"providerRetries": -1})
    assert refused_patch.status_code == 400
    before = admin.get("/api/v1/config").json()
    refused_id = newest_revision(admin)["id"]
    for revision_id, status, code in (
        (refused_id, 400, "INVALID_REQUEST"),
        (refused_id + 1000, 404, "NOT_FOUND"),
        (0, 404, "NOT_FOUND"),
        (2**40, 404, "NOT_FOUND"),
    ):
        answer = admin.post(f"/api/v1/config/revisions/{revision_id}/restore")
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text
        assert answer.json()["error"]["details"]["revision"] == revision_id
    assert admin.post("/api/v1/config/revisions/first/restore").status_code == 404
    assert admin.get("/api/v1/config").json() == before
    assert newest_revision(admin)["id"] == refused_id

    # the restore endpoint is an admin endpoint like the others, and takes no body
    evil = admin.post(f"/api/v1/config/revisions/{as_it_was}/restore", headers={"Origin": "http://evil.example"})
    assert (evil.status_code, evil.json()["error"]["code"]) == (403, "CROSS_ORIGIN")
    with_body = admin.post(
        f"/api/v1/config/revisions/{as_it_was}/restore", content="x", headers={"Content-Type": "text/plain"}
    )
    assert (with_body.status_code, with_body.json()["error"]["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    assert newest_revision(admin)["id"] == refused_id


def test_provider_configurations_are_admin_endpoints(admin: httpx.Client, clean: None) -> None:
    evil = {"Origin": "http://evil.example"}
    for method, path in (
        ("GET", "/api/v1/providers/configs"),
        ("GET", "/api/v1/providers/x/config"),
        ("PUT", "/api/v1/providers/x/config"),
        ("DELETE", "/api/v1/providers/x/config"),
    ):
        body = {"json": {"type": "ollama", "host": "http://x"}} if method == "PUT" else {}
        refused = admin.request(method, path, headers=evil, **body)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "CROSS_ORIGIN"), path
        rebound = admin.request(method, path, headers={"Host": "evil.example"}, **body)
        assert (rebound.status_code, rebound.json()["error"]["code"]) == (403, "UNAUTHORIZED"), path
    as_text = admin.put("/api/v1/providers/x/config", content="{}", headers={"Content-Type": "text/plain"})
    assert (as_text.status_code, as_text.json()["error"]["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
    # the public provider list is still public
    assert admin.get("/api/v1/providers", headers=evil).status_code == 200
    assert admin.get("/api/v1/providers/configs").json() == {"providers": {}, "count": 0}


OPENAI_KEY = "sk-provider-config-0123456789"


def test_an_openai_provider_put_with_its_key_answers_stays_across_a_restart_and_never_shows_the_key(
    admin: httpx.Client, config_server: ServerProcess, clean: None
) -> None:
    upstream = FakeOpenAI(api_key=OPENAI_KEY).start()  # refuses any other key
    try:
        table = {"type": "openai", "baseUrl": upstream.url, "apiKey": OPENAI_KEY, "models": ["chat-model"]}
        put = admin.put("/api/v1/providers/vllm/config", json=table)
        assert put.status_code == 200, put.text
        shown = {
            "type": "openai",
            "enabled": True,
            "timeoutS": 120.0,
            "source": "api",
            "baseUrl": upstream.url,
            "apiKey": "***",
            "models": ["chat-model"],
        }
        assert put.json()["provider"] == shown
        assert admin.get("/api/v1/providers/vllm/config").json() == shown
        assert admin.get("/api/v1/providers/configs").json()["providers"]["vllm"] == shown
        assert admin.get("/api/v1/config").json()["providers"]["vllm"]["apiKey"] == "***"
        wait_until(lambda: "vllm/chat-model" in model_names(admin))
        conversation = create_conversation(admin, model="vllm/chat-model")
        reply = stream_message(admin, model="vllm/chat-model", message="with a key", conversation_id=conversation)
        assert reply.error is None, reply.error_payload
        assert reply.text == "Hello from chat-model!"
        assert upstream.chat_headers()[-1]["authorization"] == f"Bearer {OPENAI_KEY}"
        # the row keeps the key, since it reaches the provider; nothing else shows it
        kind, enabled, settings = stored_rows(config_server)["vllm"]
        assert (kind, enabled, settings["api_key"]) == ("openai", True, OPENAI_KEY)
        assert OPENAI_KEY not in admin.get("/api/v1/config/revisions").text
        assert OPENAI_KEY not in admin.get("/api/v1/config/backup").text

        # after a restart the key comes back from the database (the server refuses any other)
        config_server.restart()
        with httpx.Client(base_url=config_server.url, timeout=30) as client:
            wait_until(lambda: "vllm/chat-model" in model_names(client))
            again = stream_message(client, model="vllm/chat-model", message="restarted", conversation_id=conversation)
            assert again.error is None, again.error_payload
            assert upstream.chat_headers()[-1]["authorization"] == f"Bearer {OPENAI_KEY}"

            # a restore of the revision that added it takes the key from the running configuration
            assert client.patch("/api/v1/config", json={"systemPrompt": "After the key"}).status_code == 200
            restored = client.post(f"/api/v1/config/revisions/{put.json()['revision']['id']}/restore")
            assert restored.status_code == 200, restored.text
            assert restored.json()["config"]["providers"]["vllm"] == {**shown, "source": "file"}
            assert restored.json()["config"]["settings"]["system_prompt"]["value"] != "After the key"
            wait_until(lambda: "vllm/chat-model" in model_names(client))
            back = stream_message(client, model="vllm/chat-model", message="restored", conversation_id=conversation)
            assert back.error is None, back.error_payload
            assert upstream.chat_headers()[-1]["authorization"] == f"Bearer {OPENAI_KEY}"
        assert OPENAI_KEY not in config_server.logs()
    finally:
        upstream.stop()
