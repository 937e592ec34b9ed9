"""The default model through `/v1` with the official client: it chats streamed and not, and a client that closes
its stream early stops the generation: the engine frees the batch place, the usage counts a cancelled reply,
and the service answers the next request."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from tests.fixtures.polling import wait_until

pytestmark = pytest.mark.slow

SMOL = "hf/SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
#: decoded plainly greedy (no repetition penalty) the default model tells this story to any length
STORY = [
    {"role": "system", "content": "You are a storyteller."},
    {"role": "user", "content": "Tell me a long story about a dragon."},
]


def running_generations(http: httpx.Client) -> float | None:
    """`beth_model_batch` of the default model: its generations in the engine's batch (None until it loads)."""
    found = re.search(rf'^beth_model_batch{{model="{SMOL}"}} (\S+)$', http.get("/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_the_default_model_chats_streamed_and_not(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0, max_tokens=40)
    text = whole.choices[0].message.content or ""
    assert "Paris" in text
    streamed = client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0, max_tokens=40, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text


def test_closing_a_stream_stops_the_generation_and_frees_its_place(client: openai.OpenAI, http: httpx.Client) -> None:
    def totals() -> dict[str, int]:
        return http.get("/api/v1/usage", params={"period": "hour", "model": SMOL}).json()["totals"]

    before = totals()
    stream = client.chat.completions.create(
        model=SMOL,
        messages=STORY,
        temperature=0,
        max_tokens=1000,
        stream=True,
        extra_body={"repetition_penalty": 1.0},
    )
    received = ""
    for chunk in stream:
        received += chunk.choices[0].delta.content or ""
        if len(received) >= 30:
            break
    assert running_generations(http) == 1.0  # still generating: hundreds of tokens to go
    stream.close()
    wait_until(lambda: running_generations(http) == 0.0, timeout=30, what="the engine's batch place freed")
    after = wait_until(
        lambda: (now := totals())["cancelled"] == before["cancelled"] + 1 and now,
        timeout=10,
        what="the usage of the cancelled reply",
    )
    assert after["requests"] == before["requests"] + 1
    assert 3 <= after["completionTokens"] - before["completionTokens"] < 1000  # stopped long before its end
    # no lease is left on the model either: an unload (an admin action, from loopback) takes effect at once
    unloaded = http.post(f"/api/v1/models/{SMOL}/unload")
    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json()["model"]["loaded"] is False
    # the service is healthy and answers the next request
    next_reply = client.chat.completions.create(model=SMOL, messages=QUESTION, temperature=0, max_tokens=8)
    assert next_reply.choices[0].message.content
