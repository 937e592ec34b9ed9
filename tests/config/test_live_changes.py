"""Changes that reach running parts: Ollama hosts added and removed in the file, the `hf` model pool
re-tuned, the default model followed, and API changes brought back after a restart (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.test_graphql_web_client import GET_MESSAGES, create_conversation
from tests.chat.test_images import tiny_png
from tests.chat.test_usage_and_metrics import metric
from tests.config.conftest import TOML_BODY, config_file, first_config
from tests.fixtures.config_files import write_config
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, graphql
from tests.fixtures.web_client import GREEDY, stream_message


def model_names(client: httpx.Client) -> list[str]:
    return [model["name"] for model in client.get("/api/v1/models").json()["models"]]


def loaded(client: httpx.Client, name: str) -> bool:
    response = client.get(f"/api/v1/models/{name}")
    assert response.status_code == 200, response.text
    return response.json()["loaded"]


def test_an_ollama_host_added_in_the_file_serves_its_models_and_leaves_when_removed(
    admin: httpx.Client, config_server: ServerProcess, ollamas: tuple[FakeOllama, FakeOllama]
) -> None:
    first, second = ollamas
    write_config(
        config_file(config_server),
        first_config(first) + f'\n[providers.second]\ntype = "ollama"\nhost = "{second.url}"\ntimeout_s = 30\n',
    )
    wait_until(lambda: "second/llama3.1:8b" in model_names(admin))
    table = admin.get("/api/v1/config").json()["providers"]["second"]
    assert table == {
        "type": "ollama",
        "host": second.url,
        "enabled": True,
        "timeoutS": 30.0,
        "numCtx": 8192,
        "keepAliveS": 300.0,
        "source": "file",
    }
    assert "ollama/llama3.1:8b" in model_names(admin)  # the main Ollama keeps its models

    conversation = create_conversation(admin, model="second/llama3.1:8b")
    reply = stream_message(
        admin, model="second/llama3.1:8b", message="to the second host", conversation_id=conversation
    )
    assert reply.error is None
    assert reply.text == "Hello from llama3.1:8b!"
    assert any(r["messages"][-1]["content"] == "to the second host" for r in second.chats())
    assert not any(r["messages"][-1]["content"] == "to the second host" for r in first.chats())

    # A table the service cannot take keeps the running configuration, and says why.
    write_config(
        config_file(config_server), first_config(first) + '\n[providers.hf]\ntype = "ollama"\nhost = "http://x"\n'
    )
    error = wait_until(lambda: admin.get("/api/v1/config").json()["lastError"])
    assert error["key"] == "providers.hf"
    assert "second/llama3.1:8b" in model_names(admin)

    write_config(config_file(config_server), first_config(first))
    wait_until(lambda: "second/llama3.1:8b" not in model_names(admin))
    assert admin.get("/api/v1/config").json()["providers"] == {}
    gone = stream_message(admin, model="second/llama3.1:8b", message="anyone there?", conversation_id=conversation)
    assert gone.error is not None
    assert not any(r["messages"][-1]["content"] == "anyone there?" for r in second.chats())


def test_the_models_directory_is_re_pointed_without_a_restart(
    admin: httpx.Client,
    config_server: ServerProcess,
    ollamas: tuple[FakeOllama, FakeOllama],
    tmp_path: Path,
    tiny_export_int8: Path,
) -> None:
    (tmp_path / "tiny-int8").symlink_to(tiny_export_int8, target_is_directory=True)
    assert admin.post("/api/v1/models/hf/tiny/load").status_code == 200
    write_config(config_file(config_server), first_config(ollamas[0]) + f'hf_models_dir = "{tmp_path}"\n')
    wait_until(lambda: "hf/tiny-int8" in model_names(admin))
    assert "hf/tiny" not in model_names(admin)
    conversation = create_conversation(admin, model="hf/tiny-int8")
    reply = stream_message(admin, model="hf/tiny-int8", message="hi", conversation_id=conversation, options=GREEDY)
    assert reply.error is None, reply.error_payload
    metrics = admin.get("/metrics").text
    # the old directory's idle model was unloaded at once; the new provider's loads are still counted
    assert 'beth_model_unloads_total{model="hf/tiny",reason="reconfigured"} 1.0' in metrics
    assert 'beth_model_loads_total{model="hf/tiny-int8",status="loaded"} 1.0' in metrics

    write_config(config_file(config_server), first_config(ollamas[0]))
    wait_until(lambda: "hf/tiny" in model_names(admin))
    assert "hf/tiny-int8" not in model_names(admin)


def test_hf_pool_settings_apply_without_a_restart(admin: httpx.Client) -> None:
    settings = admin.get("/api/v1/config").json()["settings"]
    live = ("hf_preload", "hf_keep_alive_s", "hf_max_loaded_models", "hf_memory_budget_mb", "hf_num_threads")
    for key in (*live, "hf_lookahead_tokens"):
        assert settings[key]["restartRequired"] is False, key
    assert not loaded(admin, "hf/tiny")

    response = admin.patch("/api/v1/config", json={"hfPreload": ["tiny"], "hfMaxLoadedModels": 1})
    assert response.status_code == 200, response.text
    wait_until(lambda: loaded(admin, "hf/tiny"))

    # out of the preload list, with a short keep-alive: the idle model is unloaded by the new sweeper
    response = admin.patch("/api/v1/config", json={"hfPreload": [], "hfKeepAliveS": 0.2})
    assert response.status_code == 200, response.text
    wait_until(lambda: not loaded(admin, "hf/tiny"))

    # a budget too small for the model refuses the next load with MEMORY_EXCEEDED, no restart needed
    assert admin.patch("/api/v1/config", json={"hfMemoryBudgetMb": 1}).status_code == 200
    refused = admin.post("/api/v1/models/hf/tiny/load")
    assert refused.json()["error"]["code"] == "MEMORY_EXCEEDED", refused.text
    reset = {"hfPreload": None, "hfKeepAliveS": None, "hfMaxLoadedModels": None, "hfMemoryBudgetMb": None}
    assert admin.patch("/api/v1/config", json=reset).status_code == 200
    assert admin.post("/api/v1/models/hf/tiny/load").status_code == 200

    # drafting is read afresh by every generation: a new setting reaches the loaded model without a reload
    def loads() -> float:
        return metric(admin.get("/metrics").text, "beth_model_loads_total", model="hf/tiny", status="loaded")

    before = loads()
    for lookahead in (0, None):
        assert admin.patch("/api/v1/config", json={"hfLookaheadTokens": lookahead}).status_code == 200
        conversation = create_conversation(admin, model="hf/tiny")
        reply = stream_message(admin, model="hf/tiny", message="hi", conversation_id=conversation, options=GREEDY)
        assert reply.error is None, reply.error_payload
    assert loaded(admin, "hf/tiny")
    assert loads() == before


def test_the_default_model_follows_whether_ollama_is_enabled(admin: httpx.Client) -> None:
    def created_model() -> str:
        response = admin.post("/api/v1/conversations", json={"tabName": "no model named"})
        assert response.status_code == 201, response.text
        return response.json()["llmModel"]

    assert created_model() == "llama3.1:8b"
    assert admin.patch("/api/v1/config", json={"ollamaEnabled": False, "hfDefaultModel": "tiny"}).status_code == 200
    assert created_model() == "hf/tiny"
    wait_until(lambda: not any(name.startswith("ollama/") for name in model_names(admin)))
    assert admin.patch("/api/v1/config", json={"ollamaEnabled": None, "hfDefaultModel": None}).status_code == 200
    assert created_model() == "llama3.1:8b"


def test_changes_made_through_the_api_survive_a_restart(admin: httpx.Client, config_server: ServerProcess) -> None:
    refused = admin.patch("/api/v1/config", json={"port": 5000})
    assert refused.status_code == 400
    assert "next start" in refused.json()["error"]["message"]

    changes = {"systemPrompt": "Kept across restarts", "models": {"llama3.1:8b": {"options": {"seed": 9}}}}
    assert admin.patch("/api/v1/config", json=changes).status_code == 200
    config_server.stop()
    config_server.start()
    with httpx.Client(base_url=config_server.url, timeout=30) as client:
        config = client.get("/api/v1/config").json()
        assert config["settings"]["system_prompt"]["value"] == "Kept across restarts"
        assert config["settings"]["system_prompt"]["source"] == "api"
        assert config["models"]["llama3.1:8b"]["options"] == {"seed": 9}
        startup = client.get("/api/v1/config/revisions").json()["revisions"][0]
        assert startup["source"] == "startup"
        assert startup["diff"]["system_prompt"]["to"] == "Kept across restarts"

        # a restore drops the API layer, and that too is what the next start sees
        restored = client.post(
            "/api/v1/config/restore", content=config_file(config_server).read_text(), headers=TOML_BODY
        )
        assert restored.status_code == 200, restored.text
    config_server.stop()
    config_server.start()
    with httpx.Client(base_url=config_server.url, timeout=30) as client:
        config = client.get("/api/v1/config").json()
        assert config["settings"]["system_prompt"]["source"] == "file"
        assert "llama3.1:8b" not in config["models"]


def test_stored_model_configurations_mirror_the_configuration(admin: httpx.Client) -> None:
    def stored() -> dict:
        response = admin.get("/api/v1/model-configs/ollama/llama3.1:8b")
        return response.json() if response.status_code == 200 else {}

    model_names(admin)  # a listing stores what it discovers
    assert wait_until(stored)["enabled"] is True
    table = {"enabled": False, "systemPrompt": "Stored too", "keepAliveS": 60, "options": {"temperature": 0.5}}
    assert admin.patch("/api/v1/config", json={"models": {"llama3.1:8b": table}}).status_code == 200
    row = stored()
    assert (row["enabled"], row["systemPrompt"], row["keepAliveS"]) == (False, "Stored too", 60)
    assert row["defaultOptions"] == {"temperature": 0.5}

    assert admin.patch("/api/v1/config", json={"models": {"llama3.1:8b": None}}).status_code == 200
    row = stored()
    assert (row["enabled"], row["systemPrompt"], row["keepAliveS"], row["defaultOptions"]) == (True, None, None, {})


def test_a_reloaded_public_base_url_reaches_the_graphql_image_links(
    admin: httpx.Client, config_server: ServerProcess
) -> None:
    conversation = create_conversation(admin)
    sent = stream_message(
        admin,
        model="llama3.1:8b",
        message="look",
        conversation_id=conversation,
        files=[("a.png", tiny_png(7), "image/png")],
    )
    assert sent.images is not None
    assert sent.images["processed"] == 1

    def image_url() -> str:
        messages = graphql(admin, GET_MESSAGES, {"conversationId": conversation})["data"]["messages"]
        return messages[0]["images"][0]["url"]

    assert image_url().startswith(config_server.url + "/api/images/img_")
    changed = admin.patch("/api/v1/config", json={"publicBaseUrl": "https://chat.example.com/"})
    assert changed.status_code == 200, changed.text
    assert image_url().startswith("https://chat.example.com/api/images/img_")
    admin.patch("/api/v1/config", json={"publicBaseUrl": None})
    assert image_url().startswith(config_server.url + "/api/images/img_")


def test_fallback_models_and_provider_retries_apply_to_the_next_turn(
    admin: httpx.Client, ollamas: tuple[FakeOllama, FakeOllama]
) -> None:
    first, _ = ollamas
    conversation = create_conversation(admin, model="llama3.1:8b")
    first.mode = "busy"  # every chat answers 503: retried, then the fallback models, if any
    try:
        before = len(first.chats())
        refused = stream_message(admin, model="llama3.1:8b", message="busy?", conversation_id=conversation)
        assert refused.error_payload is not None, refused.raw
        assert refused.error_payload["code"] == "OVERLOADED"
        assert len(first.chats()) - before == 3  # the first try and the default two retries

        changes = {"providerRetries": 0, "fallbackModels": ["hf/tiny"]}
        assert admin.patch("/api/v1/config", json=changes).status_code == 200
        before = len(first.chats())
        answered = stream_message(
            admin, model="llama3.1:8b", message="anyone?", conversation_id=conversation, options=GREEDY
        )
        assert answered.ended, answered.raw
        assert len(first.chats()) - before == 1  # no retry any more
        reply = admin.get(f"/api/v1/conversations/{conversation}/messages").json()["messages"][-1]
        assert (reply["sender"], reply["model"]) == ("llm", "hf/tiny")
    finally:
        first.mode = "ok"
        assert admin.patch("/api/v1/config", json={"providerRetries": None, "fallbackModels": None}).status_code == 200
