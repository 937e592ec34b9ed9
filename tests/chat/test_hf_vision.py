"""An hf vision-language export over HTTP: listed as vision-capable, sees the user's PNG through the legacy
multipart stream, answers what PyTorch answers for the same image, and refuses unreadable images clearly while
the user's message is kept. Text-only hf models keep the warning."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exports.vision import load_vision
from exports.vision_validation import synthetic_png
from tests.api.test_graphql_web_client import GET_MESSAGES, SEND_MESSAGE, create_conversation
from tests.chat.conftest import chat_env
from tests.fixtures.config_files import write_config
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess, graphql
from tests.fixtures.web_client import GREEDY, stream_message

pytest_plugins = ["tests.fixtures.vision_models"]

VLM = "hf/tiny-vlm"  # Idefics3
VLM_SPLIT = "hf/tiny-vlm-split"  # Idefics3 whose processor splits images into tiles (SmolVLM's default)
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
    tiny_vlm_split_export: Path,
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("vision-chat")
    models = workdir / "models"
    models.mkdir()
    for export in (tiny_export, tiny_vlm_export, tiny_llava_export, tiny_vlm_split_export):
        (models / export.name).symlink_to(export, target_is_directory=True)
    config = workdir / "beth.toml"
    # plain greedy decoding, as PyTorch's generate does it: no repetition penalty (the service default is 1.1)
    greedy = "".join(
        f'[models."{name}"]\nsystem_prompt = "{SYSTEM}"\n'
        f'[models."{name}".options]\ntemperature = 0\nrepetition_penalty = 1.0\nmax_tokens = {MAX_TOKENS}\n'
        for name in (VLM, LLAVA, VLM_SPLIT)
    )
    write_config(
        config,
        # the tiny tokenizer spends a token on nearly every character: the default prompt would not fit
        greedy + f'[models."hf/tiny"]\nsystem_prompt = "{SYSTEM}"\n',
    )
    process = ServerProcess(workdir, database_url, chat_env(chat_ollama, models, BETH_CONFIG=str(config)))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def client(vision_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vision_server.url, timeout=60) as http:
        yield http


def _pytorch_reply(source: Path, image: bytes | None, earlier: tuple[str, str] | None = None) -> str:
    """PyTorch's greedy reply (stop tokens end it) to the same system prompt, image and question; with
    `earlier` (a question and its reply), the image belongs to that earlier turn and the question follows."""
    import torch
    from PIL import Image

    loaded = load_vision(source)
    with_image = [{"type": "image"}] if image else []
    with_image.append({"type": "text", "text": earlier[0] if earlier else QUESTION})
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": with_image},
    ]
    if earlier:
        messages += [
            {"role": "assistant", "content": [{"type": "text", "text": earlier[1]}]},
            {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
        ]
    text = loaded.processor.apply_chat_template(messages, add_generation_prompt=True)
    images = [Image.open(io.BytesIO(image))] if image else None
    inputs = dict(loaded.processor(text=text, images=images, return_tensors="pt"))
    inputs.pop("token_type_ids", None)
    stops = list(loaded.model.generation_config.eos_token_id)
    end = loaded.processor.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    if isinstance(end, int) and end != loaded.processor.tokenizer.unk_token_id:
        stops.append(end)  # SmolVLM's turns end with it: the export stops there too
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
    assert {"name": VLM_SPLIT, "capabilities": {"vision": True}} in listed


def test_a_splitting_export_states_what_its_largest_image_costs(client: httpx.Client) -> None:
    models = {m["name"]: m for m in client.get("/api/v1/models", params={"capability": "vision"}).json()["models"]}
    # one image: <fake><global-img>, 4 image tokens, <fake>; split, up to 3x3 tiles of <fake><row_r_col_c> and
    # 4 image tokens, a newline after each row (the last one doubled), then the whole image
    assert models[VLM]["metadata"]["imageTokens"] == 7
    assert models[VLM_SPLIT]["metadata"]["imageTokens"] == 9 * 6 + 2 + 2 + 7


SOURCES = {VLM: "tiny_vlm_source", LLAVA: "tiny_llava_source", VLM_SPLIT: "tiny_vlm_split_source"}


@pytest.mark.parametrize("model", [VLM, LLAVA, VLM_SPLIT])
def test_the_model_sees_the_png_and_answers_as_pytorch_does(
    client: httpx.Client, model: str, request: pytest.FixtureRequest
) -> None:
    source = request.getfixturevalue(SOURCES[model])
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
        options=GREEDY,
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


def _rest_stream(client: httpx.Client, conversation_id: str, text: str, images: list[str]) -> dict[str, list[dict]]:
    """The typed REST stream's events by name, each name's payloads in order."""
    body = {"text": text, "stream": True, "images": images}
    with client.stream("POST", f"/api/v1/conversations/{conversation_id}/messages", json=body) as response:
        assert response.status_code == 200
        raw = response.read().decode()
    events: dict[str, list[dict]] = {}
    for block in raw.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in lines:
            events.setdefault(lines["event"], []).append(json.loads(lines["data"]))
    return events


def _graphql_turn(client: httpx.Client, conversation_id: str, text: str, images: list[str]) -> dict:
    variables = {"input": {"conversationId": conversation_id, "text": text, "sender": "user", "images": images}}
    return graphql(client, SEND_MESSAGE, variables)


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.mark.parametrize("model", [VLM, LLAVA, VLM_SPLIT])
def test_rest_and_graphql_images_answer_as_the_multipart_route_does(client: httpx.Client, model: str) -> None:
    image = synthetic_png("checkerboard")
    legacy_id = create_conversation(client, model=model)
    legacy = stream_message(
        client, model=model, message=QUESTION, conversation_id=legacy_id, files=[("c.png", image, "image/png")]
    )
    assert legacy.error is None, legacy.error_payload
    assert legacy.text  # the greedy reply PyTorch gives (checked against PyTorch above)

    rest_id = create_conversation(client, model=model)
    events = _rest_stream(client, rest_id, QUESTION, [base64.b64encode(image).decode()])
    assert "error" not in events, events
    assert events["images"] == [{**events["images"][0], "processed": 1, "warnings": []}]
    assert events["end"][0]["text"] == legacy.text

    graphql_id = create_conversation(client, model=model)
    answered = _graphql_turn(client, graphql_id, QUESTION, [_data_url(image)])
    assert "errors" not in answered, answered
    reply = answered["data"]["addMessage"]
    assert reply["error"] is None
    assert reply["userMessage"]["hasImages"] is True
    assert reply["userMessage"]["images"][0]["mimeType"] == "image/png"
    assert reply["llmMessage"]["text"] == legacy.text


def test_an_old_addmessage_without_images_still_works(client: httpx.Client) -> None:
    conversation_id = create_conversation(client, model=VLM)
    answered = graphql(
        client, SEND_MESSAGE, {"input": {"conversationId": conversation_id, "text": QUESTION, "sender": "user"}}
    )
    assert "errors" not in answered, answered
    assert answered["data"]["addMessage"]["userMessage"]["hasImages"] is False
    assert answered["data"]["addMessage"]["llmMessage"]["text"]


def _huge_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8000, 6000)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "clue"),
    [("corrupt", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image"), ("huge", None, "8000x6000")],
)
def test_unreadable_images_through_rest_and_graphql_are_clear_errors_and_the_message_is_kept(
    client: httpx.Client, name: str, data: bytes | None, clue: str
) -> None:
    encoded = base64.b64encode(data if data is not None else _huge_png()).decode()
    rest_id = create_conversation(client, model=VLM)
    events = _rest_stream(client, rest_id, f"rest {name}", [encoded])
    assert events["error"][0]["code"] == "INVALID_REQUEST"
    assert clue in str(events["error"][0])
    messages = graphql(client, GET_MESSAGES, {"conversationId": rest_id})["data"]["messages"]
    assert messages[0]["text"] == f"rest {name}"
    assert messages[0]["hasImages"] is True

    graphql_id = create_conversation(client, model=VLM)
    answered = _graphql_turn(client, graphql_id, f"graphql {name}", [_data_url(base64.b64decode(encoded))])
    assert "errors" not in answered, answered
    assert clue in answered["data"]["addMessage"]["error"]
    assert answered["data"]["addMessage"]["userMessage"]["text"] == f"graphql {name}"
    messages = graphql(client, GET_MESSAGES, {"conversationId": graphql_id})["data"]["messages"]
    assert messages[0]["text"] == f"graphql {name}"


@pytest.mark.parametrize(
    ("image", "code", "clue"),
    [
        ("R0lGODlhAQABAAAAACw=", "INVALID_REQUEST", "PNG, JPEG or WebP"),  # a GIF
        ("not base64!", "INVALID_REQUEST", "base64"),
        ("data:image/png;base64," + base64.b64encode(b"GIF89a" + b"\0" * 32).decode(), "INVALID_REQUEST", "image"),
    ],
)
def test_images_of_the_wrong_type_or_size_are_refused_through_rest_and_graphql(
    client: httpx.Client, image: str, code: str, clue: str
) -> None:
    """Refused as the multipart route refuses them: before anything is stored, with a stable code."""
    conversation_id = create_conversation(client, model=VLM)
    body = {"text": "look", "reply": True, "images": [image]}
    refused = client.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == code, refused.json()
    assert clue in refused.json()["error"]["message"]
    answered = _graphql_turn(client, conversation_id, "look", [image])
    assert answered["errors"][0]["extensions"]["code"] == code, answered
    assert clue in answered["errors"][0]["message"]
    assert graphql(client, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"] == []
    too_many = [base64.b64encode(synthetic_png("gradient")).decode()] * 6
    refused = client.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"text": "six", "reply": True, "images": too_many}
    )
    assert refused.status_code == 400
    assert "Too many files" in refused.json()["error"]["message"]


@pytest.mark.parametrize("model", [VLM, LLAVA])
def test_a_second_turn_still_sees_the_first_turns_image(
    client: httpx.Client, model: str, request: pytest.FixtureRequest
) -> None:
    source = request.getfixturevalue("tiny_llava_source" if model == LLAVA else "tiny_vlm_source")
    image = synthetic_png("gradient")
    conversation_id = create_conversation(client, model=model)
    first = _rest_stream(client, conversation_id, "Look at this.", [base64.b64encode(image).decode()])
    assert "error" not in first, first
    second = _rest_stream(client, conversation_id, QUESTION, [])
    assert "error" not in second, second
    assert "images" not in second
    assert second["end"][0]["text"] == _pytorch_reply(source, image, ("Look at this.", first["end"][0]["text"]))


TIGHT_BUDGET = 100  # the first turn with its image fits; the second's texts leave less room than an image takes


@pytest.fixture(scope="module")
def tight_client(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, chat_ollama: FakeOllama, tiny_llava_export: Path
) -> Iterator[httpx.Client]:
    workdir = tmp_path_factory.mktemp("vision-tight")
    models = workdir / "models"
    models.mkdir()
    (models / tiny_llava_export.name).symlink_to(tiny_llava_export, target_is_directory=True)
    config = workdir / "beth.toml"
    write_config(
        config,
        f'[models."{LLAVA}"]\nsystem_prompt = "{SYSTEM}"\ncontext_budget = {TIGHT_BUDGET}\n'
        f'[models."{LLAVA}".options]\ntemperature = 0\nrepetition_penalty = 1.0\nmax_tokens = {MAX_TOKENS}\n',
    )
    process = ServerProcess(workdir, database_url, chat_env(chat_ollama, models, BETH_CONFIG=str(config)))
    process.start()
    with httpx.Client(base_url=process.url, timeout=60) as http:
        yield http
    process.stop()


def test_an_earlier_image_that_no_longer_fits_is_dropped_and_its_text_kept(
    tight_client: httpx.Client, tiny_llava_source: Path, tiny_llava_export: Path
) -> None:
    from inference.tokenizer import ChatTokenizer

    image = synthetic_png("gradient")
    conversation_id = create_conversation(tight_client, model=LLAVA)
    first = _rest_stream(tight_client, conversation_id, "Look at this.", [base64.b64encode(image).decode()])
    assert "error" not in first, first
    reply = first["end"][0]["text"]
    # the premise: the texts fit the tight budget, the earlier image (16 tokens) does not
    tokenizer = ChatTokenizer(tiny_llava_export)
    texts = sum(len(tokenizer.encode(t)) + 8 for t in (SYSTEM, "Look at this.", reply, QUESTION))
    assert 0 <= TIGHT_BUDGET - MAX_TOKENS - texts < 16, texts
    second = _rest_stream(tight_client, conversation_id, QUESTION, [])
    assert "error" not in second, second
    assert second["end"][0]["text"] == _pytorch_reply(tiny_llava_source, None, ("Look at this.", reply))


def test_images_that_are_not_a_list_of_strings_are_a_clear_400(client: httpx.Client) -> None:
    conversation_id = create_conversation(client, model=VLM)
    for images in (-5, [5], "abc"):
        body = {"text": "look", "stream": True, "images": images}
        refused = client.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["details"]["problems"][0]["key"].startswith("images")
