"""Removing an exported model: `beth-chat models remove` and `POST /api/v1/models/<name>/remove`, refused while
a reply is being generated with it, on both databases.

The models directory holds a copy of the tiny export and a link to the default model's export (the link is
removed, never what it points to). A reply at temperature 10 with no top-k or top-p cut almost never draws
the end token among SmolLM2's 49152, so it runs until it is stopped. The server has a database of its own: no
other test's server generates with, or stores records of, the models removed here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_graphql_web_client import create_conversation
from tests.chat.conftest import chat_env
from tests.chat.test_usage_and_metrics import metric
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, running

DEFAULT_ALIAS = "SmolLM2-135M-Instruct"
DEFAULT = f"hf/{DEFAULT_ALIAS}"
ENDLESS = {"temperature": 10, "topK": 0, "topP": 1, "maxTokens": 4000}


@pytest.fixture(scope="module")
def models_dir(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, tiny_export: Path, default_export: Path
) -> Path:
    """A fresh folder for each database's server (the tests remove what is in it)."""
    folder = tmp_path_factory.mktemp("removable-models")
    shutil.copytree(tiny_export, folder / "tiny")
    (folder / DEFAULT_ALIAS).symlink_to(default_export, target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def removal_server(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory, chat_ollama: FakeOllama, models_dir: Path
) -> Iterator[ServerProcess]:
    env = chat_env(chat_ollama, models_dir, CATALOG_TTL_S="0.2", STREAM_STALE_S="30")
    with running(ServerProcess(tmp_path_factory.mktemp("removal"), module_database_url, env)) as process:
        yield process


@pytest.fixture
def client(removal_server: ServerProcess) -> Iterator[httpx.Client]:
    with removal_server.client(timeout=60) as http:
        yield http


def beth_chat(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line on the server's settings (its database and models directory)."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=server.workdir,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def listed(server: ServerProcess) -> list[str]:
    result = beth_chat(server, "models", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [model["alias"] for model in json.loads(result.stdout)["models"]]


def catalog(client: httpx.Client) -> list[str]:
    return [model["name"] for model in client.get("/api/v1/models").json()["models"]]


@dataclass
class Reply:
    """A streamed REST turn read in a thread: its events by name, as they arrive."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: int = 0
    done: threading.Event = field(default_factory=threading.Event)


def stream_reply(server: ServerProcess, conversation_id: str, model: str) -> Reply:
    reply = Reply()

    def read() -> None:
        body = {"text": "Tell me a story.", "stream": True, "model": model, "options": ENDLESS}
        try:
            with (
                server.client(timeout=120) as http,
                http.stream("POST", f"/api/v1/conversations/{conversation_id}/messages", json=body) as response,
            ):
                buffer = ""
                for chunk in response.iter_text():
                    buffer += chunk
                    *blocks, buffer = buffer.split("\n\n")
                    for block in blocks:
                        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                        if "event" in fields:
                            reply.events[fields["event"]] = json.loads(fields["data"])
                            reply.tokens += fields["event"] == "token"
        finally:
            reply.done.set()

    threading.Thread(target=read, daemon=True).start()
    return reply


def test_a_model_is_not_removed_while_it_generates_and_is_unloaded_first_when_idle(
    removal_server: ServerProcess, client: httpx.Client, models_dir: Path, default_export: Path
) -> None:
    conversation_id = create_conversation(client, model=DEFAULT)
    reply = stream_reply(removal_server, conversation_id, DEFAULT)
    wait_until(lambda: reply.tokens >= 2 or reply.done.is_set(), timeout=120, what="the reply generating")
    assert not reply.done.is_set(), reply.events

    refused = client.post(f"/api/v1/models/{DEFAULT}/remove")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "MODEL_IN_USE"
    assert error["details"] == {"model": DEFAULT, "activeGenerations": 1}
    assert "in use" in error["message"]

    command = beth_chat(removal_server, "models", "remove", DEFAULT_ALIAS)
    assert command.returncode == 1, command.stdout
    assert f"{DEFAULT} is in use" in command.stderr
    assert "Traceback" not in command.stderr
    # nothing changed: the reply goes on, the export, its listing and its stored record are all there
    assert not reply.done.is_set(), reply.events
    assert (models_dir / DEFAULT_ALIAS).is_dir()
    assert DEFAULT_ALIAS in listed(removal_server)
    assert client.get(f"/api/v1/model-configs/{DEFAULT}").status_code == 200

    stopped = client.post(
        "/api/terminate-stream",
        json={"sessionId": reply.events["session"]["sessionId"], "conversationId": conversation_id},
    )
    assert stopped.status_code == 200, stopped.text
    assert reply.done.wait(60)
    assert reply.events["terminated"]["reason"] == "USER_REQUESTED"
    # idle now, and still in memory (the catalog's list follows within its time to live)
    wait_until(lambda: client.get(f"/api/v1/models/{DEFAULT}").json()["loaded"], what="the model listed as loaded")

    removed = client.post(f"/api/v1/models/{DEFAULT}/remove")
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"action": "remove", "name": DEFAULT, "unloaded": True}
    assert metric(client.get("/metrics").text, "beth_model_unloads_total", model=DEFAULT, reason="removed") == 1
    assert DEFAULT not in catalog(client)
    assert client.get(f"/api/v1/models/{DEFAULT}").json()["error"]["code"] == "MODEL_NOT_FOUND"
    assert client.get(f"/api/v1/model-configs/{DEFAULT}").status_code == 404
    assert DEFAULT_ALIAS not in listed(removal_server)
    # the link went, never what it pointed to; nothing is left behind in the models directory
    assert not (models_dir / DEFAULT_ALIAS).exists()
    assert (default_export / "manifest.json").is_file()
    assert not [p.name for p in models_dir.iterdir() if p.name.startswith(f".{DEFAULT_ALIAS}")]
    # the conversation and its partial reply are kept
    messages = client.get(f"/api/v1/conversations/{conversation_id}/messages").json()["messages"]
    assert [(m["sender"], m["model"]) for m in messages] == [("user", None), ("llm", DEFAULT)]


def test_the_command_removes_an_export_folder_and_its_record(
    removal_server: ServerProcess, client: httpx.Client, models_dir: Path
) -> None:
    wait_until(lambda: client.get("/api/v1/model-configs/hf/tiny").status_code == 200, what="the stored record")
    assert "tiny" in listed(removal_server)

    removed = beth_chat(removal_server, "models", "remove", "tiny")
    assert removed.returncode == 0, removed.stderr
    assert f"removed hf/tiny ({models_dir / 'tiny'})" in removed.stdout
    assert not (models_dir / "tiny").exists()
    assert not [p.name for p in models_dir.iterdir() if p.name.startswith(".tiny")]
    assert "tiny" not in listed(removal_server)
    assert client.get("/api/v1/model-configs/hf/tiny").status_code == 404
    wait_until(lambda: "hf/tiny" not in catalog(client), what="the service's list without it")

    again = beth_chat(removal_server, "models", "remove", "tiny")
    assert again.returncode == 1
    assert "No exported model named 'tiny'" in again.stderr
    assert "Traceback" not in again.stderr


def test_the_admin_action_refuses_what_it_cannot_remove(client: httpx.Client) -> None:
    def error(response: httpx.Response, status: int) -> str:
        assert response.status_code == status, response.text
        return response.json()["error"]["code"]

    assert error(client.post("/api/v1/models/hf/nothing-here/remove"), 404) == "MODEL_NOT_FOUND"
    assert error(client.post("/api/v1/models/ollama/llama3.1:8b/remove"), 400) == "CAPABILITY_UNSUPPORTED"
    assert error(client.post("/api/v1/models/hf/tiny/delete"), 404) == "NOT_FOUND"
    # an admin action: a page on another site cannot make a browser send it
    foreign = client.post("/api/v1/models/hf/nothing-here/remove", headers={"origin": "http://evil.example"})
    assert error(foreign, 403) == "CROSS_ORIGIN"
