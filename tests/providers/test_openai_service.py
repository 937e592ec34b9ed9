"""OpenAI-compatible providers through the real service over HTTP (SQLite and PostgreSQL): a `[providers.b]
type = "openai"` table and `openai/` from `OPENAI_BASE_URL` answer chat turns from fake servers, fall back when
busy, stop upstream when stopped, follow the file live, and never show their API keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_graphql_web_client import create_conversation
from tests.chat.test_images import tiny_png
from tests.fixtures.config_files import write_config
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.openai_upstream import FakeOpenAI
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, running
from tests.fixtures.web_client import ClientStream, stream_message, terminate

KEY_B = "sk-b-0123456789abcdef"
KEY_C = "sk-c-literal-fedcba9876"
KEY_MAIN = "sk-main-5555aaaa"


def config_text(b: FakeOpenAI, *extra: str) -> str:
    return "\n".join(
        [
            "[providers.b]",
            'type = "openai"',
            f'base_url = "{b.url}"',
            'api_key = "env:B_KEY"',
            'models = ["chat-model", "slow", "vision-model"]',
            "timeout_s = 30",
            "",
            "[providers.c]",
            'type = "openai"',
            f'base_url = "{b.url}"',
            f'api_key = "{KEY_C}"',
            'models = ["no-usage"]',
            *extra,
            "",
        ]
    )


@pytest.fixture(scope="module")
def upstreams(module_ollama: FakeOllama) -> Iterator[tuple[FakeOpenAI, FakeOpenAI, FakeOllama]]:
    with FakeOpenAI() as b, FakeOpenAI(api_key=KEY_MAIN) as main:
        b.api_key = ""  # b takes both keys: checked below from the recorded headers
        yield b, main, module_ollama


@pytest.fixture(scope="module")
def openai_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[FakeOpenAI, FakeOpenAI, FakeOllama]
) -> Iterator[ServerProcess]:
    b, main, ollama = upstreams
    workdir = tmp_path_factory.mktemp("openai")
    config = workdir / "beth.toml"
    write_config(config, config_text(b))
    env = {
        "BETH_CONFIG": str(config),
        "B_KEY": KEY_B,
        "OPENAI_BASE_URL": main.url,
        "OPENAI_API_KEY": KEY_MAIN,
        "OLLAMA_HOST": ollama.url,
        "FALLBACK_MODELS": "ollama/llama3.1:8b",
        "PROVIDER_RETRY_BACKOFF_S": "0.01",
        "CONFIG_RELOAD_INTERVAL_S": "0.2",
        "CATALOG_TTL_S": "0.2",
        "LOG_LEVEL": "debug",
    }
    with running(ServerProcess(workdir, database_url, env)) as process:
        yield process


@pytest.fixture
def client(openai_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=openai_server.url, timeout=30) as api:
        yield api


def turn(client: httpx.Client, model: str, text: str) -> dict:
    conversation_id = create_conversation(client, model=model)
    response = client.post(f"/api/v1/conversations/{conversation_id}/messages", json={"text": text, "reply": True})
    assert response.status_code == 201, response.text
    return response.json()


def model_names(client: httpx.Client) -> list[str]:
    return [m["name"] for m in client.get("/api/v1/models").json()["models"]]


def test_a_turn_on_a_named_openai_provider_answers_from_its_server(
    client: httpx.Client, upstreams: tuple[FakeOpenAI, FakeOpenAI, FakeOllama]
) -> None:
    b = upstreams[0]
    answer = turn(client, "b/chat-model", "hello b")
    assert answer["error"] is None, answer
    reply = answer["reply"]
    assert reply["text"] == "Hello from chat-model!"
    assert (reply["provider"], reply["model"]) == ("b", "b/chat-model")
    assert (reply["promptTokens"], reply["completionTokens"], reply["finishReason"]) == (21, 3, "stop")
    request = next(r for r in reversed(b.requests) if r.body.get("messages", [{}])[-1].get("content") == "hello b")
    assert request.body["model"] == "chat-model"
    assert request.headers["authorization"] == f"Bearer {KEY_B}"  # the env:B_KEY reference, resolved

    answer = turn(client, "c/no-usage", "hello c")
    assert answer["reply"]["text"] == "Hello from no-usage!"
    assert answer["reply"]["completionTokens"] == 3  # counted: the server sent no usage
    assert b.chat_headers()[-1]["authorization"] == f"Bearer {KEY_C}"


def test_openai_names_the_server_of_openai_base_url(
    client: httpx.Client, upstreams: tuple[FakeOpenAI, FakeOpenAI, FakeOllama]
) -> None:
    main = upstreams[1]
    answer = turn(client, "openai/chat-model", "hello main")
    assert answer["error"] is None, answer
    assert answer["reply"]["text"] == "Hello from chat-model!"
    assert answer["reply"]["model"] == "openai/chat-model"
    assert main.chats()[-1]["messages"][-1]["content"] == "hello main"
    assert main.chat_headers()[-1]["authorization"] == f"Bearer {KEY_MAIN}"


def test_the_catalog_lists_what_each_table_allows(client: httpx.Client) -> None:
    names = model_names(client)
    assert {"b/chat-model", "b/slow", "b/vision-model", "c/no-usage", "openai/long", "openai/chat-model"} <= set(names)
    assert "b/long" not in names
    assert "c/chat-model" not in names
    vision = client.get("/api/v1/models/b/vision-model").json()
    assert vision["capabilities"]["vision"] is True
    assert vision["contextLength"] == 8192
    providers = {p["name"]: p for p in client.get("/api/v1/providers").json()["providers"]}
    assert {"b", "c", "openai"} <= set(providers)

    def health() -> dict[str, str]:
        return {p["name"]: p["health"]["status"] for p in client.get("/api/v1/providers").json()["providers"]}

    wait_until(lambda: health()["b"] != "unknown" and health()["openai"] != "unknown")
    assert health()["b"] == health()["openai"] == "healthy"


def test_a_busy_server_is_retried_then_the_fallback_answers(
    client: httpx.Client, upstreams: tuple[FakeOpenAI, FakeOpenAI, FakeOllama]
) -> None:
    b = upstreams[0]
    before = len(b.chats())
    b.chat_status = 503
    try:
        answer = turn(client, "b/chat-model", "are you busy?")
    finally:
        b.chat_status = 200
    assert answer["error"] is None, answer
    assert answer["reply"]["text"] == "Hello from llama3.1:8b!"
    assert answer["reply"]["model"] == "ollama/llama3.1:8b"
    assert len(b.chats()) - before == 3  # the first try and two retries (PROVIDER_RETRIES)

    not_served = turn(client, "b/long", "not in models")
    assert not_served["reply"] is None
    assert not_served["error"]["code"] == "MODEL_NOT_FOUND"  # a name the table does not allow never falls back


def test_stopping_a_reply_closes_the_upstream_request(
    client: httpx.Client, upstreams: tuple[FakeOpenAI, FakeOpenAI, FakeOllama]
) -> None:
    b = upstreams[0]
    conversation_id = create_conversation(client, model="b/slow")
    left_before = b.disconnects.count("slow")
    result: dict = {}

    def stop_after_two_tokens(seen: ClientStream) -> bool:
        if len(seen.tokens) == 2 and not result:
            result.update(terminate(client, seen.session_id, conversation_id))
        return False

    seen = stream_message(
        client, model="b/slow", message="count slowly", conversation_id=conversation_id, on_block=stop_after_two_tokens
    )
    assert result["success"] is True
    assert seen.terminated is not None
    wait_until(lambda: b.disconnects.count("slow") > left_before)


def test_images_reach_a_vision_model_as_data_urls(
    client: httpx.Client, upstreams: tuple[FakeOpenAI, FakeOpenAI, FakeOllama]
) -> None:
    conversation_id = create_conversation(client, model="b/vision-model")
    seen = stream_message(
        client,
        model="b/vision-model",
        message="what is this?",
        conversation_id=conversation_id,
        files=[("a.png", tiny_png(3), "image/png")],
    )
    assert seen.images["warnings"] == []
    assert seen.text == "I see 1 images: image/png."
    content = upstreams[0].chats()[-1]["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "what is this?"}
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,iVBOR")


def test_api_keys_are_never_shown_nor_logged(client: httpx.Client, openai_server: ServerProcess) -> None:
    config = client.get("/api/v1/config").json()
    assert config["settings"]["openai_api_key"]["value"] == "***"
    assert config["settings"]["openai_base_url"]["value"].endswith("/v1")
    b, c = config["providers"]["b"], config["providers"]["c"]
    assert b["apiKey"] == "env:B_KEY"
    assert b["models"] == ["chat-model", "slow", "vision-model"]
    assert (b["type"], b["timeoutS"], b["source"]) == ("openai", 30.0, "file")
    assert "host" not in b
    assert c["apiKey"] == "***"
    backup = client.get("/api/v1/config/backup").text
    assert 'api_key = "env:B_KEY"' in backup
    assert KEY_C not in backup

    # a key given through the API is kept in its provider_configs row, and shown as nowhere else
    given = client.patch(
        "/api/v1/config", json={"providers": {"d": {"type": "openai", "baseUrl": "http://x/v1", "apiKey": "sk-no"}}}
    )
    assert given.status_code == 200, given.text
    assert given.json()["config"]["providers"]["d"]["apiKey"] == "***"
    assert "sk-no" not in given.text
    assert "sk-no" not in client.get("/api/v1/config/backup").text
    assert client.patch("/api/v1/config", json={"providers": {"d": None}}).status_code == 200
    invalid = client.post(
        "/api/v1/config/validate",
        content=f'[providers.e]\ntype = "openai"\nbase_url = "nope"\napi_key = "{KEY_C}"\n',
        headers={"Content-Type": "application/toml"},
    ).json()
    assert invalid["valid"] is False
    assert KEY_C not in str(invalid)

    revisions = client.get("/api/v1/config/revisions").text
    logs = openai_server.logs()
    for key in (KEY_B, KEY_C, KEY_MAIN, "sk-no"):
        assert key not in revisions
        assert key not in logs
    assert f"Bearer {KEY_B}" not in logs


def test_a_table_added_and_removed_in_the_file_follows_live(
    client: httpx.Client, openai_server: ServerProcess, upstreams: tuple[FakeOpenAI, FakeOpenAI, FakeOllama]
) -> None:
    b = upstreams[0]
    path = Path(openai_server.env["BETH_CONFIG"])
    write_config(path, config_text(b, "", "[providers.d]", 'type = "openai"', f'base_url = "{b.url}"'))
    wait_until(lambda: "d/long" in model_names(client))
    answer = turn(client, "d/long", "from d")
    assert answer["reply"]["text"] == "one two three "
    assert answer["reply"]["finishReason"] == "length"
    assert "authorization" not in b.chat_headers()[-1]  # no key configured, none sent

    write_config(path, config_text(b))
    wait_until(lambda: "d/long" not in model_names(client))
    gone = turn(client, "d/long", "anyone?")
    assert gone["error"]["code"] == "MODEL_NOT_FOUND"
