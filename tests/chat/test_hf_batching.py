"""Eight hf streams at once share the model's batch: each ends, is saved byte for byte, and says what it says alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_graphql_web_client import create_conversation
from tests.chat.conftest import chat_env
from tests.chat.test_stream_turn import stored
from tests.chat.test_usage_and_metrics import metric
from tests.fixtures.config_files import write_config
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.server import ServerProcess
from tests.fixtures.web_client import ClientStream, stream_message

MODEL = "hf/tiny"
# replies of the tiny model's length limit, after prompts of different lengths
MESSAGES = [
    "Hello world!",
    "How are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Grüße aus München: ça va? 日本語のテキスト 🙂",
    "user assistant system: write a haiku.",
    "write a haiku about the sea",
    "Paris is the capital of France. Paris!",
]


@pytest.fixture(scope="module")
def batching_server(
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    chat_ollama: FakeOllama,
    chat_models_dir: Path,
) -> Iterator[ServerProcess]:
    """The chat server with greedy hf/tiny (so a reply does not depend on when it ran) and a batch of 8."""
    folder = tmp_path_factory.mktemp("hf-batching")
    config = folder / "beth.toml"
    write_config(config, f'[models."{MODEL}".options]\ntemperature = 0\nmax_tokens = 40\n')
    env = chat_env(
        chat_ollama, chat_models_dir, BETH_CONFIG=str(config), HF_MAX_BATCH_SIZE="8", SYSTEM_PROMPT="Be brief."
    )
    process = ServerProcess(folder, database_url, env)
    process.start()
    yield process
    process.stop()


def _stream(server: ServerProcess, conversation_id: str, message: str) -> ClientStream:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        return stream_message(client, model=MODEL, message=message, conversation_id=conversation_id)


def test_eight_concurrent_hf_streams_end_byte_exact_and_saved(batching_server: ServerProcess) -> None:
    with httpx.Client(base_url=batching_server.url, timeout=120) as client:
        together_ids = [create_conversation(client, model=MODEL) for _ in MESSAGES]
        alone_ids = [create_conversation(client, model=MODEL) for _ in MESSAGES]
        results: dict[int, ClientStream] = {}
        lock = threading.Lock()

        def run(index: int) -> None:
            seen = _stream(batching_server, together_ids[index], MESSAGES[index])
            with lock:
                results[index] = seen

        threads = [threading.Thread(target=run, args=(index,)) for index in range(len(MESSAGES))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert len(results) == len(MESSAGES)
        alone = [_stream(batching_server, alone_ids[i], message) for i, message in enumerate(MESSAGES)]
        for index, seen in results.items():
            assert seen.ended, seen.raw
            assert seen.error is None, seen.raw
            assert seen.text  # the tiny model always says something before its 40 tokens run out
            messages = stored(client, together_ids[index])
            assert [(m["sender"], m["status"]) for m in messages] == [("user", "complete"), ("llm", "complete")]
            assert messages[1]["text"] == seen.text  # saved exactly as streamed
            assert seen.text == alone[index].text  # and what it says alone
        text = client.get("/metrics").text
    # every request was admitted to the batch (and how long it waited is observed); none waits now
    assert metric(text, "beth_model_queue_wait_seconds_count", model=MODEL) == 2 * len(MESSAGES)
    assert metric(text, "beth_model_queue_length", model=MODEL) == 0
    assert metric(text, "beth_model_batch", model=MODEL) == 0
