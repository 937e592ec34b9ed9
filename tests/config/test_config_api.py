"""The configuration endpoints and the hot reload against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import tomllib

import httpx

from tests.api.test_graphql_web_client import create_conversation
from tests.config.conftest import TOML_BODY, config_file, first_config
from tests.fixtures.config_files import write_config
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess
from tests.fixtures.web_client import ClientStream, stream_message, terminate


def setting(client: httpx.Client, key: str) -> dict:
    response = client.get("/api/v1/config")
    assert response.status_code == 200, response.text
    return response.json()["settings"][key]


def test_hot_reload_of_a_valid_and_an_invalid_edit_while_a_stream_runs(
    admin: httpx.Client, config_server: ServerProcess, ollamas: tuple[FakeOllama, FakeOllama]
) -> None:
    first, second = ollamas
    slow_conversation = create_conversation(admin, model="slow:latest")
    seen: list[ClientStream] = []
    progress = threading.Event()

    def on_block(stream: ClientStream) -> bool:
        if not seen:
            seen.append(stream)
        if len(stream.tokens) >= 3:
            progress.set()
        return False

    def run() -> None:
        with httpx.Client(base_url=config_server.url, timeout=60) as client:
            stream_message(
                client, model="slow:latest", message="go", conversation_id=slow_conversation, on_block=on_block
            )

    streaming = threading.Thread(target=run)
    streaming.start()
    assert progress.wait(15)

    # A valid edit: a new service prompt, a model table, and Ollama re-pointed to the second server.
    write_config(
        config_file(config_server),
        f'ollama_host = "{second.url}"\nsystem_prompt = "You are the second prompt."\n'
        '[models."llama3.1:8b"]\nsystem_prompt = "You are Llama, reloaded."\nkeep_alive_s = 60\n'
        '[models."llama3.1:8b".options]\ntemperature = 0.25\n',
    )
    wait_until(lambda: setting(admin, "ollama_host")["value"] == second.url, timeout=10)
    config = admin.get("/api/v1/config").json()
    assert config["settings"]["system_prompt"] == {
        "value": "You are the second prompt.",
        "source": "file",
        "envName": "SYSTEM_PROMPT",
        "restartRequired": False,
    }
    assert config["models"]["llama3.1:8b"]["systemPrompt"] == "You are Llama, reloaded."
    conversation = create_conversation(admin, model="llama3.1:8b")
    reply = stream_message(admin, model="llama3.1:8b", message="after the reload", conversation_id=conversation)
    assert reply.text == "Hello from llama3.1:8b!"
    request = next(r for r in second.chats() if r["messages"][-1]["content"] == "after the reload")
    assert request["messages"][0] == {"role": "system", "content": "You are Llama, reloaded."}
    assert request["options"]["temperature"] == 0.25
    assert request["keep_alive"] == 60
    assert not any(r["messages"][-1]["content"] == "after the reload" for r in first.chats())

    # An invalid edit: the running configuration stays, the error is visible in the API and the history.
    write_config(config_file(config_server), 'ollama_host = "not a url"\nchat_max_tokens = "lots"\n')
    error = wait_until(lambda: admin.get("/api/v1/config").json()["lastError"], timeout=10)
    assert error["key"] in ("ollama_host", "chat_max_tokens")
    assert error["value"] in ("not a url", "lots")
    assert error["reason"]
    assert setting(admin, "ollama_host")["value"] == second.url
    newest = admin.get("/api/v1/config/revisions").json()["revisions"][0]
    assert (newest["source"], newest["valid"], newest["applied"]) == ("file", False, False)
    assert error["key"] in newest["error"]

    # The stream that started before both edits is still running, from the first server, untouched.
    tokens_before = len(seen[0].tokens)
    assert streaming.is_alive()
    assert terminate(admin, seen[0].session_id, slow_conversation)["success"] is True
    streaming.join(30)
    stream = seen[0]
    assert stream.error is None
    assert stream.terminated is not None
    assert len(stream.tokens) >= tokens_before
    assert stream.text.startswith("word0 word1 word2 ")
    assert "".join(stream.tokens).split() == [f"word{i}" for i in range(len(stream.text.split()))]
    assert any(r["model"] == "slow:latest" for r in first.chats())

    write_config(config_file(config_server), first_config(first))
    wait_until(lambda: setting(admin, "ollama_host")["value"] == first.url, timeout=10)


def test_patch_is_validated_stored_and_applied(admin: httpx.Client) -> None:
    response = admin.patch(
        "/api/v1/config",
        json={"systemPrompt": "From the API", "models": {"llava:7b": {"enabled": False, "contextBudget": 1024}}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["revision"]["source"] == "api"
    assert body["revision"]["diff"]["system_prompt"]["to"] == "From the API"
    assert body["config"]["settings"]["system_prompt"]["source"] == "api"
    assert body["config"]["models"]["llava:7b"] == {
        "enabled": False,
        "systemPrompt": None,
        "contextBudget": 1024,
        "keepAliveS": None,
        "options": {},
        "source": "api",
    }
    conversation = create_conversation(admin, model="llava:7b")
    refused = stream_message(admin, model="llava:7b", message="hi", conversation_id=conversation)
    assert refused.error is not None
    assert "disabled" in refused.error
    assert refused.error_payload["code"] == "MODEL_NOT_FOUND"
    # refused before anything was stored
    assert admin.get(f"/api/v1/conversations/{conversation}/messages").json()["messages"] == []

    invalid = admin.patch("/api/v1/config", json={"models": {"llava:7b": {"options": {"top_p": 3}}}})
    assert invalid.status_code == 400
    detail = invalid.json()["error"]["details"]["errors"][0]
    assert detail == {"key": 'models."llava:7b".options.top_p', "value": 3, "reason": detail["reason"], "source": "api"}
    assert "between 0 and 1" in detail["reason"]

    env_set = admin.patch("/api/v1/config", json={"chat_max_tokens": 10})
    assert env_set.status_code == 409
    assert "CHAT_MAX_TOKENS" in env_set.json()["error"]["message"]

    revisions = admin.get("/api/v1/config/revisions").json()["revisions"]
    assert [(r["source"], r["valid"]) for r in revisions[:2]] == [("api", False), ("api", True)]
    assert all(r["createdAt"] for r in revisions)
    assert revisions[-1]["source"] == "startup"

    assert admin.patch("/api/v1/config", json={"models": {"llava:7b": None}}).status_code == 200
    assert "llava:7b" not in admin.get("/api/v1/config").json()["models"]


def test_validate_applies_nothing(admin: httpx.Client) -> None:
    before = admin.get("/api/v1/config").json()
    good = admin.post(
        "/api/v1/config/validate", content='system_prompt = "x"\n[models."a"]\nenabled = false\n', headers=TOML_BODY
    )
    assert good.json() == {"valid": True, "errors": []}
    bad = admin.post("/api/v1/config/validate", json={"port": 0, "models": {"a": {"enabled": "maybe"}}})
    assert bad.status_code == 200
    assert bad.json()["valid"] is False
    assert {e["key"] for e in bad.json()["errors"]} == {"port", 'models."a".enabled'}
    broken = admin.post("/api/v1/config/validate", content="system_prompt = ", headers=TOML_BODY)
    assert broken.json()["valid"] is False
    assert admin.get("/api/v1/config").json() == before


def test_backup_then_restore(admin: httpx.Client, config_server: ServerProcess) -> None:
    admin.patch("/api/v1/config", json={"models": {"llama3.1:8b": {"options": {"seed": 42}}}})
    backup = admin.get("/api/v1/config/backup")
    assert backup.status_code == 200
    assert "attachment" in backup.headers["content-disposition"]
    assert tomllib.loads(backup.text)["models"]["llama3.1:8b"]["options"]["seed"] == 42

    admin.patch("/api/v1/config", json={"systemPrompt": "changed after the backup", "models": {"llama3.1:8b": None}})
    refused = admin.post(
        "/api/v1/config/restore", content='fallback_models = 3\n[models."x"]\nenabled = 1\n', headers=TOML_BODY
    )
    assert refused.status_code == 400
    assert setting(admin, "system_prompt")["value"] == "changed after the backup"

    restored = admin.post("/api/v1/config/restore", content=backup.text, headers=TOML_BODY)
    assert restored.status_code == 200, restored.text
    assert restored.json()["revision"]["source"] == "restore"
    config = admin.get("/api/v1/config").json()
    assert config["models"]["llama3.1:8b"]["options"] == {"seed": 42}
    assert config["settings"]["system_prompt"]["value"] == "From the API"
    assert config_file(config_server).read_text() == backup.text
    assert admin.get("/api/v1/config/revisions").json()["revisions"][0]["source"] == "restore"


def test_events_stream_each_revision(admin: httpx.Client, config_server: ServerProcess) -> None:
    listener = httpx.Client(base_url=config_server.url, timeout=30)
    with listener, listener.stream("GET", "/api/v1/config/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = (line for line in events.iter_lines() if line)
        assert next(lines) == ": connected"
        assert admin.patch("/api/v1/config", json={"provider_retries": 3}).status_code == 200
        block = [next(lines), next(lines)]
    assert block[0] == "event: config"
    assert '"provider_retries"' in block[1]
    assert '"source":"api"' in block[1]
