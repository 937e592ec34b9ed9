"""`image_url` parts with data: URLs through `/v1`, under the chat turn's rules: a vision model sees them (and
answers as it does through the REST turn); a text-only model's images go to `vision_fallback_model`; with no
model that can see them the request is refused, as nothing would keep the images. Nothing is ever fetched."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from exports.vision_validation import synthetic_png
from tests.api.test_graphql_web_client import create_conversation
from tests.fixtures.server import ServerProcess, running
from tests.openai.conftest import CONFIG, client_of, http_of, models_dir, server_env

pytest_plugins = ["tests.fixtures.vision_models"]

VLM = "hf/tiny-vlm"
#: the prompt under which the tiny vision model's replies to the two test images differ
VISION_CONFIG = CONFIG + f'[models."{VLM}"]\nsystem_prompt = "You look at pictures."\n'
QUESTION = "What is in the picture?"
MAX_TOKENS = 8
#: plain greedy decoding, so that the same prompt gives the same reply on every route
GREEDY = {"temperature": 0, "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def vision_server(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    openai_ollama: Any,
    tiny_export: Path,
    tiny_vlm_export: Path,
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("openai-vision")
    models = models_dir(workdir / "models", tiny_export, tiny_vlm_export)
    env = server_env(workdir, openai_ollama, models, VISION_CONFIG)
    with running(ServerProcess(workdir, database_url, env)) as process:
        yield process


@pytest.fixture
def client(vision_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with client_of(vision_server) as opened:
        yield opened


@pytest.fixture
def http(vision_server: ServerProcess) -> Iterator[httpx.Client]:
    with http_of(vision_server) as opened:
        yield opened


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def looking(url: str, text: str = QUESTION) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}
    ]


def ask(client: openai.OpenAI, model: str, messages: list[dict[str, Any]]) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0, extra_body={"repetition_penalty": 1.0}
    )  # type: ignore[arg-type]


def rest_reply(http: httpx.Client, model: str, png: bytes) -> str:
    """The REST turn's reply to the same question and image, with the same options."""
    conversation_id = create_conversation(http, model=model)
    options = {"temperature": 0, "repetitionPenalty": 1.0, "maxTokens": MAX_TOKENS}
    body = {"text": QUESTION, "reply": True, "images": [data_url(png)], "options": options}
    answered = http.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)
    assert answered.status_code == 201, answered.text
    return answered.json()["reply"]["text"]


def test_a_vision_model_sees_the_image_as_through_the_chat_turn(client: openai.OpenAI, http: httpx.Client) -> None:
    answers = {}
    for kind in ("gradient", "checkerboard"):
        png = synthetic_png(kind)
        reply = ask(client, VLM, looking(data_url(png)))
        assert reply.model == VLM
        answers[kind] = reply.choices[0].message.content
        assert answers[kind] == rest_reply(http, VLM, png)
    assert answers["gradient"] != answers["checkerboard"]  # the model saw each image
    streamed = client.chat.completions.create(
        model=VLM,
        messages=looking(data_url(synthetic_png("gradient"))),  # type: ignore[arg-type]
        max_tokens=MAX_TOKENS,
        stream=True,
        temperature=0,
        extra_body={"repetition_penalty": 1.0},
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == answers["gradient"]


def test_a_text_only_model_s_images_go_to_the_vision_fallback_or_are_refused(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    png = synthetic_png("checkerboard")
    direct = ask(client, VLM, looking(data_url(png))).choices[0].message.content
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "hf/tiny", looking(data_url(png)))
    assert caught.value.code == "unsupported_capability"
    assert "vision_fallback_model" in caught.value.message
    with pytest.raises(openai.NotFoundError):  # a name that does not route is that, images or not
        ask(client, "hf/no-such-model", looking(data_url(png)))
    changed = http.patch("/api/v1/config", json={"vision_fallback_model": VLM})
    assert changed.status_code == 200, changed.text
    try:
        reply = ask(client, "hf/tiny", looking(data_url(png)))
        assert (reply.model, reply.choices[0].message.content) == (VLM, direct)
        # an image earlier in the conversation goes to a vision model too
        earlier = [*looking(data_url(png), "Look."), {"role": "assistant", "content": "I see."}]
        later = ask(client, "hf/tiny", [*earlier, {"role": "user", "content": QUESTION}])
        assert later.model == VLM
        text_only = ask(client, "hf/tiny", [{"role": "user", "content": QUESTION}])
        assert text_only.model == "hf/tiny"
    finally:
        http.patch("/api/v1/config", json={"vision_fallback_model": ""})


@pytest.mark.parametrize(
    ("messages", "param", "clue"),
    [
        (
            looking("data:image/gif;base64," + base64.b64encode(b"GIF89a" + b"\0" * 32).decode()),
            "messages[0]",
            "PNG, JPEG or WebP",
        ),
        (looking("data:image/png;base64,not base64!"), "messages[0].content[1].image_url.url", "base64"),
        (looking("http://127.0.0.1:1/a.png"), "messages[0].content[1].image_url.url", "data: URLs only"),
        (
            [
                {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]},
                {"role": "user", "content": QUESTION},
            ],
            "messages[0].content[0].image_url.url",
            "user messages only",
        ),
    ],
)
def test_images_that_cannot_be_taken_are_a_clear_400(
    client: openai.OpenAI, messages: list[dict[str, Any]], param: str, clue: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, VLM, messages)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == param, body
    assert clue in body["message"], body
