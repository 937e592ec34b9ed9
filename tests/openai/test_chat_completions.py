"""The official `openai` client chats through `/v1`: models, completions streamed and not, options, names, errors.

Every model the registry knows answers under its full or bare name; options change the reply as documented;
refusals are OpenAI's errors (so the client raises its usual exceptions); nothing is stored but usage.
"""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, query_sql
from tests.openai.conftest import SYSTEM

TINY = "hf/tiny"
HELLO = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello"}]
GREEDY = {"temperature": 0, "repetition_penalty": 1.0}


def greedy(client: openai.OpenAI, max_tokens: int = 16, **options: object) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model=TINY, messages=HELLO, max_tokens=max_tokens, extra_body=GREEDY, **options
    )  # type: ignore[call-overload]


def usage_totals(http: httpx.Client, model: str) -> dict[str, int]:
    return http.get("/api/v1/usage", params={"period": "hour", "model": model}).json()["totals"]


def test_models_lists_every_model_of_the_catalog(client: openai.OpenAI, http: httpx.Client) -> None:
    listed = client.models.list().data
    catalog = [m["name"] for m in http.get("/api/v1/models").json()["models"]]
    assert [m.id for m in listed] == catalog
    assert {"hf/tiny", "hf/SmolLM2-135M-Instruct", "ollama/llama3.1:8b"} <= set(catalog)
    owners = {m.id: m.owned_by for m in listed}
    assert (owners["hf/tiny"], owners["ollama/llama3.1:8b"]) == ("hf", "ollama")
    assert all(m.object == "model" and m.created >= 0 for m in listed)
    assert client.models.retrieve("hf/tiny").id == "hf/tiny"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("hf/no-such-model")
    assert caught.value.code == "model_not_found"
    raw = http.get("/v1/models").json()
    assert raw["object"] == "list"
    tiny = next(m for m in raw["data"] if m["id"] == "hf/tiny")
    assert {"id", "object", "created", "owned_by"} <= set(tiny)
    # beyond OpenAI's fields, what an upstream's user needs: the context and what the model takes
    catalog_tiny = http.get("/api/v1/models/hf/tiny").json()
    assert (tiny["context_length"], tiny["capabilities"]) == (catalog_tiny["contextLength"], ["text"])


def test_a_completion_answers_in_openai_s_shape(client: openai.OpenAI) -> None:
    completion = greedy(client)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == TINY
    (choice,) = completion.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_a_stream_sends_the_role_the_deltas_the_finish_and_the_usage(client: openai.OpenAI) -> None:
    whole = greedy(client)
    chunks = list(
        client.chat.completions.create(
            model=TINY,
            messages=HELLO,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=GREEDY,
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    *deltas, finish, usage = chunks
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert finish.choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in deltas)
    assert "".join(c.choices[0].delta.content or "" for c in deltas) == whole.choices[0].message.content
    assert len(deltas) > 2  # streamed in pieces, not at once


def test_the_stream_ends_with_done_and_has_no_usage_unless_asked(http: httpx.Client) -> None:
    body = {"model": TINY, "messages": HELLO, "max_tokens": 4, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(chunk["choices"] for chunk in chunks)  # no usage chunk without stream_options.include_usage


def test_max_tokens_caps_the_reply_and_finishes_by_length(client: openai.OpenAI) -> None:
    capped = greedy(client, max_tokens=3)
    assert capped.usage is not None
    assert (capped.usage.completion_tokens, capped.choices[0].finish_reason) == (3, "length")
    newer = client.chat.completions.create(
        model=TINY, messages=HELLO, max_completion_tokens=2, max_tokens=10, extra_body=GREEDY
    )
    assert newer.usage is not None
    assert (newer.usage.completion_tokens, newer.choices[0].finish_reason) == (2, "length")


def test_a_seed_makes_a_sampled_reply_reproducible(client: openai.OpenAI) -> None:
    def sampled(seed: int) -> str:
        reply = client.chat.completions.create(
            model=TINY, messages=HELLO, max_tokens=12, temperature=1.5, top_p=1.0, seed=seed
        )
        return reply.choices[0].message.content or ""

    first = sampled(7)
    assert sampled(7) == first
    assert any(sampled(seed) != first for seed in (8, 9, 10))


def test_a_stop_string_ends_the_reply_before_it(client: openai.OpenAI) -> None:
    text = greedy(client, max_tokens=16).choices[0].message.content or ""
    stop = text[4:6]
    assert len(text) > 6
    assert stop.strip()
    for given in (stop, [stop, "never-in-this-reply"]):
        stopped = greedy(client, max_tokens=16, stop=given)
        assert stopped.choices[0].message.content == text[: text.index(stop)]
        assert stopped.choices[0].finish_reason == "stop"


def test_every_name_the_registry_knows_answers(client: openai.OpenAI) -> None:
    bare = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    assert bare.model == TINY
    for name in ("llama3.1:8b", "ollama/llama3.1:8b"):
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}])
        assert (reply.model, reply.choices[0].message.content) == ("ollama/llama3.1:8b", "Hello from llama3.1:8b!")
    streamed = client.chat.completions.create(
        model="llama3.1:8b", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Hello from llama3.1:8b!"


def test_fields_that_openai_clients_send_do_not_fail(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=TINY,
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": SYSTEM}]},
            {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Again", "name": "someone"},
        ],
        max_tokens=2,
        user="someone",
        logit_bias=None,  # type: ignore[arg-type]
        frequency_penalty=0,
        presence_penalty=0,
        n=1,
        stream_options=None,
        response_format={"type": "text"},
        extra_body={"logprobs": False, "store": False, "metadata": {"a": "b"}, "some_new_field": 1},
    )
    assert reply.choices[0].message.content is not None


@pytest.mark.parametrize(
    ("options", "param", "clue"),
    [
        ({"n": 2}, "n", "n=1"),
        ({"frequency_penalty": 0.5}, "frequency_penalty", "repetition_penalty"),
        ({"presence_penalty": -1}, "presence_penalty", "repetition_penalty"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "Tools"),
        ({"logprobs": True}, "logprobs", "Log probabilities"),
        ({"logit_bias": {"42": 5}}, "logit_bias", "logit_bias"),
        ({"response_format": {"type": "json_object"}}, "response_format", "text response format"),
        ({"temperature": 11}, "temperature", "<= 10"),
        ({"max_tokens": 0}, "max_tokens", ">= 1"),
    ],
)
def test_what_this_api_does_not_do_is_a_clear_400(
    client: openai.OpenAI, options: dict[str, object], param: str, clue: str
) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=TINY, messages=HELLO, stream=stream, **options)  # type: ignore[call-overload]
        assert caught.value.status_code == 400
        body = caught.value.body
        assert isinstance(body, dict)
        assert (body["type"], body["param"]) == ("invalid_request_error", param), body
        assert clue in body["message"]


@pytest.mark.parametrize(
    ("messages", "param", "clue"),
    [
        (
            [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42", "tool_call_id": "x"}],
            "messages[1]",
            "Tool",
        ),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "messages", "user's"),
        ([{"role": "system", "content": "only a system prompt"}], "messages", "user's"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}],
            "messages[0].content[0].image_url.url",
            "nothing is fetched",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            "messages[0].content[0].type",
            "input_audio",
        ),
        ([{"role": "wizard", "content": "hi"}], "messages[0].role", "wizard"),
    ],
)
def test_messages_this_api_cannot_take_are_a_clear_400(
    client: openai.OpenAI, messages: list[dict[str, object]], param: str, clue: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=TINY, messages=messages)  # type: ignore[arg-type]
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == param, body
    assert clue in body["message"], body


def test_an_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    for name in ("hf/no-such-model", "openai/gpt-4o", "no-such-model:latest"):
        for stream in (False, True):
            with pytest.raises(openai.NotFoundError) as caught:
                client.chat.completions.create(model=name, messages=HELLO, stream=stream)
            assert caught.value.code == "model_not_found"
            assert caught.value.type == "invalid_request_error"


def test_a_prompt_beyond_the_context_is_a_400_context_length_exceeded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=TINY, messages=[{"role": "user", "content": "word " * 2000}])
    assert caught.value.code == "context_length_exceeded"


def test_an_error_after_the_first_token_ends_the_stream_with_an_error_object(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    stream = client.chat.completions.create(
        model="midfail:latest", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    received: list[str] = []

    def read_all() -> None:
        received.extend(chunk.choices[0].delta.content or "" for chunk in stream)

    with pytest.raises(openai.APIError) as caught:
        read_all()
    assert "".join(received)  # the first token arrived before the failure
    assert caught.value.body is not None
    body = {"model": "midfail:latest", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    error = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert (error["type"], error["code"]) == ("server_error", "generation_failed")
    assert "data: [DONE]" not in lines


def test_usage_is_recorded_and_nothing_else_is_stored(
    client: openai.OpenAI, http: httpx.Client, openai_server: ServerProcess
) -> None:
    assert TINY in [m["name"] for m in http.get("/api/v1/models").json()["models"]]  # listed, so its record is stored
    wait_until(lambda: http.get(f"/api/v1/model-configs/{TINY}").status_code == 200, what="the stored record")
    started_ms = int(time.time() * 1000)
    before = usage_totals(http, TINY)
    replies = [
        greedy(client, max_tokens=5),
        *list(
            client.chat.completions.create(
                model=TINY, messages=HELLO, max_tokens=4, stream=True, stream_options={"include_usage": True}
            )
        )[-1:],
    ]
    after = usage_totals(http, TINY)
    assert after["requests"] == before["requests"] + 2
    spent = sum(reply.usage.completion_tokens for reply in replies if reply.usage)
    assert after["completionTokens"] == before["completionTokens"] + spent
    assert after["promptTokens"] > before["promptTokens"]
    # the model that answered is stamped in its stored configuration, as after a turn
    last_used = http.get(f"/api/v1/model-configs/{TINY}").json()["lastUsedAt"]
    assert last_used is not None
    assert int(last_used) >= started_ms
    for table in ("conversations", "messages", "stream_sessions", "images"):
        assert query_sql(openai_server.database_url, f"SELECT COUNT(*) FROM {table}") == [(0,)], table
