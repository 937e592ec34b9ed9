"""An hf vision-language export over HTTP: listed as vision-capable, sees the user's PNG through the legacy
multipart stream, answers what PyTorch answers for the same image, and refuses unreadable images clearly while
the user's message is kept. Text-only hf models keep the warning."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exports.vision import load_vision, synthetic_png
from tests.api.test_graphql_web_client import GET_MESSAGES, create_conversation
from tests.chat.conftest import chat_env
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess, graphql
from tests.fixtures.web_client import stream_message

pytest_plugins = ["tests.fixtures.vision_models"]

VLM = "hf/tiny-vlm"  # Idefics3
LLAVA = "hf/tiny-llava"
SYSTEM = "You look at pictures."
QUESTION = "What is in the picture?"
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def vision_server(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    chat_ollama: FakeOllama,
    tiny_export: Path,
    tiny_vlm_export: Path,
    tiny_llava_export: Path,
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("vision-chat")
    models = workdir / "models"
    models.mkdir()
    for export in (tiny_export, tiny_vlm_export, tiny_llava_export):
        (models / export.name).symlink_to(export, target_is_directory=True)
    config = workdir / "beth.toml"
    # plain greedy decoding, as PyTorch's generate does it: no repetition penalty (the service default is 1.1)
    greedy = "".join(
        f'[models."{name}"]\nsystem_prompt = "{SYSTEM}"\n'
        f'[models."{name}".options]\ntemperature = 0\nrepetition_penalty = 1.0\nmax_tokens = {MAX_TOKENS}\n'
        for name in (VLM, LLAVA)
    )
    config.write_text(
        # the tiny tokenizer spends a token on nearly every character: the default prompt would not fit
        greedy + f'[models."hf/tiny"]\nsystem_prompt = "{SYSTEM}"\n'
    )
    process = ServerProcess(workdir, database_url, chat_env(chat_ollama, models, BETH_CONFIG=str(config)))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def client(vision_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vision_server.url, timeout=60) as http:
        yield http


def _pytorch_reply(source: Path, image: bytes) -> str:
    """PyTorch's greedy reply (stop tokens end it) to the same system prompt, image and question."""
    import torch
    from PIL import Image

    loaded = load_vision(source)
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
    ]
    text = loaded.processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = dict(loaded.processor(text=text, images=[Image.open(io.BytesIO(image))], return_tensors="pt"))
    inputs.pop("token_type_ids", None)
    stops = list(loaded.model.generation_config.eos_token_id)
    with torch.inference_mode():
        output = loaded.model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=stops)
    tokens = [t for t in output[0, inputs["input_ids"].shape[1] :].tolist() if t not in stops]
    # a reply cut off inside a multi-byte character: the stream holds the incomplete bytes back
    return loaded.processor.tokenizer.decode(tokens).rstrip("\ufffd")


def test_the_vision_export_is_listed_as_vision_capable(client: httpx.Client) -> None:
    vision = [m["name"] for m in client.get("/api/v1/models", params={"capability": "vision"}).json()["models"]]
    assert VLM in vision
    assert LLAVA in vision
    assert "hf/tiny" not in vision
    query = "query($c: ModelCapability) { models(capability: $c) { name capabilities { vision } } }"
    listed = graphql(client, query, {"c": "VISION"})["data"]["models"]
    assert {"name": VLM, "capabilities": {"vision": True}} in listed
    assert {"name": LLAVA, "capabilities": {"vision": True}} in listed


@pytest.mark.parametrize("model", [VLM, LLAVA])
def test_the_model_sees_the_png_and_answers_as_pytorch_does(
    client: httpx.Client, model: str, request: pytest.FixtureRequest
) -> None:
    source = request.getfixturevalue("tiny_llava_source" if model == LLAVA else "tiny_vlm_source")
    answers = {}
    for kind in ("gradient", "checkerboard"):
        image = synthetic_png(kind)
        conversation_id = create_conversation(client, model=model)
        seen = stream_message(
            client,
            model=model,
            message=QUESTION,
            conversation_id=conversation_id,
            files=[(f"{kind}.png", image, "image/png")],
        )
        assert seen.status == 200
        assert seen.error is None, seen.error_payload
        assert seen.images is not None
        assert seen.images["processed"] == 1
        assert seen.images["warnings"] == []  # the model sees it: nothing to warn about
        assert seen.text == _pytorch_reply(source, image)
        answers[kind] = seen.text
        messages = graphql(client, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
        assert messages[0]["hasImages"] is True
        assert messages[1]["text"] == seen.text
    assert answers["gradient"] != answers["checkerboard"]


@pytest.mark.parametrize("model", [VLM, LLAVA])
def test_an_unreadable_image_is_a_clear_error_and_the_message_is_kept(client: httpx.Client, model: str) -> None:
    conversation_id = create_conversation(client, model=model)
    corrupt = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # PNG magic, then nothing readable
    seen = stream_message(
        client,
        model=model,
        message="and this one?",
        conversation_id=conversation_id,
        files=[("broken.png", corrupt, "image/png")],
    )
    assert seen.error is not None
    assert seen.error_payload is not None
    assert seen.error_payload["code"] == "INVALID_REQUEST"
    assert "image" in str(seen.error_payload), seen.error_payload
    messages = graphql(client, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert messages[0]["text"] == "and this one?"


def test_a_text_only_hf_model_still_warns_and_answers(client: httpx.Client) -> None:
    conversation_id = create_conversation(client, model="hf/tiny")
    seen = stream_message(
        client,
        model="hf/tiny",
        message="hello",
        conversation_id=conversation_id,
        files=[("a.png", synthetic_png("gradient"), "image/png")],
    )
    assert seen.error is None, seen.error_payload
    assert seen.images is not None
    assert "cannot see images" in seen.images["warnings"][0]


def test_an_image_with_too_many_pixels_is_a_clear_error_and_the_message_is_kept(client: httpx.Client) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8000, 6000)).save(buffer, format="PNG")  # 48 million pixels, a file of a few kB
    conversation_id = create_conversation(client, model=VLM)
    seen = stream_message(
        client,
        model=VLM,
        message="a huge one",
        conversation_id=conversation_id,
        files=[("huge.png", buffer.getvalue(), "image/png")],
    )
    assert seen.error_payload is not None
    assert seen.error_payload["code"] == "INVALID_REQUEST"
    assert "8000x6000" in str(seen.error_payload)
    messages = graphql(client, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert messages[0]["text"] == "a huge one"
    assert messages[0]["hasImages"] is True
