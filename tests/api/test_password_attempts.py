"""Wrong passwords are limited per conversation and per client, on every route that checks one.

The server here allows 3 wrong passwords per conversation and 5 per client a minute. Clients are told
apart by `X-Forwarded-For`, which uvicorn takes from a loopback proxy (the tests are one).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_graphql_web_client import TERMINATE_STREAM
from tests.fixtures.config_files import write_config
from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, new_id, running
from tests.fixtures.web_client import stream_message

SECRET = "open sesame"
PER_CONVERSATION, PER_CLIENT = 3, 5
_addresses = itertools.count(1)


def limits_file(per_conversation: int) -> str:
    return (
        f"auth_failures_per_conversation = {per_conversation}\n"
        f"auth_failures_per_client = {PER_CLIENT}\n"
        "auth_failure_window_s = 600\n"
    )


@pytest.fixture(scope="module")
def limited(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The limits come from its config file, which a test may change while it runs."""
    workdir = Path(tmp_path_factory.mktemp("limited"))
    write_config(workdir / "beth.toml", limits_file(PER_CONVERSATION))
    env = {"BETH_CONFIG": str(workdir / "beth.toml"), "CONFIG_RELOAD_INTERVAL_S": "0.2", "OLLAMA_ENABLED": "0"}
    process = ServerProcess(workdir, database_url, env)
    with running(process):
        yield process


def client_of(server: ServerProcess) -> httpx.Client:
    """A client with an address of its own (no earlier test's failures count against it)."""
    number = next(_addresses)
    address = f"10.{number // 250}.{number % 250}.7"
    return httpx.Client(base_url=server.url, timeout=30, headers={"X-Forwarded-For": address})


def private_conversation(client: httpx.Client) -> str:
    conversation_id = new_id()
    created = client.post("/api/v1/conversations", json={"id": conversation_id, "tabName": "t", "password": SECRET})
    assert created.status_code == 201, created.text
    return conversation_id


def gql(client: httpx.Client, query: str, variables: dict[str, object]) -> dict:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()


def read_messages(client: httpx.Client, conversation_id: str, password: str) -> httpx.Response:
    return client.get(
        f"/api/v1/conversations/{conversation_id}/messages", headers={"X-Conversation-Password": password}
    )


def test_a_right_password_after_a_few_wrong_ones_still_opens(limited: ServerProcess) -> None:
    with client_of(limited) as client:
        conversation_id = private_conversation(client)
        for _ in range(PER_CONVERSATION - 1):
            assert read_messages(client, conversation_id, "guess").status_code == 403
        assert read_messages(client, conversation_id, SECRET).status_code == 200
        assert read_messages(client, conversation_id, SECRET).status_code == 200
        # right passwords did not count: the last wrong one allowed is still answered as wrong, not refused
        assert read_messages(client, conversation_id, "typo").status_code == 403
        assert read_messages(client, conversation_id, SECRET).status_code == 429


def test_over_the_conversation_limit_every_route_refuses_even_the_right_password(limited: ServerProcess) -> None:
    with client_of(limited) as owner:
        conversation_id = private_conversation(owner)
        added = owner.post(
            f"/api/v1/conversations/{conversation_id}/messages",
            json={"text": "kept", "sender": "user"},
            headers={"X-Conversation-Password": SECRET},
        )
        assert added.status_code == 201, added.text
    for _ in range(PER_CONVERSATION):  # from different clients: only the conversation's limit is reached
        with client_of(limited) as guesser:
            assert read_messages(guesser, conversation_id, "guess").status_code == 403

    with client_of(limited) as client:
        refused = read_messages(client, conversation_id, SECRET)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "TOO_MANY_ATTEMPTS"
        assert "Too many wrong passwords" in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 600
        deleted = client.delete(f"/api/v1/conversations/{conversation_id}", headers={"X-Conversation-Password": SECRET})
        assert deleted.status_code == 429

        password_args = {"id": conversation_id, "password": SECRET}
        for query in (
            "query($id: String!, $password: String) { conversation(id: $id, password: $password) { id } }",
            "query($id: String!, $password: String) { messages(conversationId: $id, password: $password) { id } }",
            "mutation($id: String!, $password: String!) { verifyPassword(input: {conversationId: $id, "
            "password: $password}) { message } }",
            'mutation($id: String!, $password: String) { addMessage(input: {conversationId: $id, text: "x", '
            'sender: "llm", password: $password}) { message } }',
        ):
            body = gql(client, query, password_args)
            assert body["errors"][0]["extensions"]["code"] == "TOO_MANY_ATTEMPTS", (query, body)
        for query, field in (
            (
                "mutation($id: String!, $password: String) { deleteConversation(conversationId: $id, "
                "password: $password) { message success } }",
                "deleteConversation",
            ),
            (
                'mutation($id: ID!, $password: String) { deleteMessagesAfter(conversationId: $id, messageId: "1", '
                "password: $password) { message success } }",
                "deleteMessagesAfter",
            ),
        ):
            result = gql(client, query, password_args)["data"][field]
            assert result["success"] is False
            assert result["message"].startswith("Too many wrong passwords"), result
        terminate_input = {"sessionId": "s", "conversationId": conversation_id, "password": SECRET, "reason": None}
        terminated = gql(client, TERMINATE_STREAM, {"input": terminate_input})["data"]["terminateStream"]
        assert terminated["success"] is False
        assert terminated["message"].startswith("Too many wrong passwords"), terminated

        rest_terminate = client.post("/api/terminate-stream", json=terminate_input)
        assert rest_terminate.status_code == 429, rest_terminate.text
        assert rest_terminate.json()["code"] == "TOO_MANY_ATTEMPTS"
        assert "Retry-After" in rest_terminate.headers
        seen = stream_message(client, model="m", message="hi", conversation_id=conversation_id, password=SECRET)
        assert seen.error_payload is not None
        assert seen.error_payload["code"] == "TOO_MANY_ATTEMPTS"

    with client_of(limited) as client:  # nothing was changed or deleted by the refused calls
        assert (
            client.get(
                f"/api/v1/conversations/{conversation_id}", headers={"X-Conversation-Password": SECRET}
            ).status_code
            == 429
        )
    limited.stop()
    limited.start()  # counts live in memory: a restart (or the window passing) opens the conversation again
    with client_of(limited) as client:
        messages = read_messages(client, conversation_id, SECRET)
        assert messages.status_code == 200, messages.text
        assert [m["text"] for m in messages.json()["messages"]] == ["kept"]


def test_one_client_guessing_across_conversations_is_limited(limited: ServerProcess) -> None:
    with client_of(limited) as owner:
        conversations = [private_conversation(owner) for _ in range(PER_CLIENT + 1)]
    with client_of(limited) as guesser:
        for conversation_id in conversations[:PER_CLIENT]:
            assert read_messages(guesser, conversation_id, "guess").status_code == 403
        refused = read_messages(guesser, conversations[-1], SECRET)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "TOO_MANY_ATTEMPTS"
    with client_of(limited) as other:  # another client, and the conversations themselves, are not locked out
        assert read_messages(other, conversations[-1], SECRET).status_code == 200
        assert read_messages(other, conversations[0], SECRET).status_code == 200


def test_terminate_never_tells_a_wrong_password_from_a_right_one(limited: ServerProcess) -> None:
    """With a made-up session id, a wrong and the right password get the same answer, in GraphQL and REST."""
    with client_of(limited) as client:
        conversation_id = private_conversation(client)
        answers = []
        for password in ("guess", SECRET):
            terminate_input = {"sessionId": "stream_x_y", "conversationId": conversation_id, "password": password}
            graph = gql(client, TERMINATE_STREAM, {"input": {**terminate_input, "reason": None}})
            rest = client.post("/api/terminate-stream", json=terminate_input)
            answers.append((graph["data"]["terminateStream"], rest.status_code, rest.json()))
        assert answers[0] == answers[1]
        assert answers[0][0]["message"] == "Stream session not found"
        assert answers[0][1] == 404


def test_terminate_refuses_a_password_over_72_bytes_like_every_route(limited: ServerProcess) -> None:
    with client_of(limited) as client:
        conversation_id = private_conversation(client)
        terminate_input = {"sessionId": "stream_x_y", "conversationId": conversation_id, "password": "p" * 73}
        rest = client.post("/api/terminate-stream", json=terminate_input)
        assert rest.status_code == 400, rest.text
        assert rest.json()["error"] == "password is longer than 72 bytes"
        assert rest.json()["code"] == "INVALID_REQUEST"
        graph = gql(client, TERMINATE_STREAM, {"input": {**terminate_input, "reason": None}})["data"]["terminateStream"]
        assert (graph["success"], graph["message"]) == (False, "password is longer than 72 bytes")
        other = read_messages(client, conversation_id, "p" * 73)
        assert other.status_code == 400
        assert other.json()["error"]["message"] == "password is longer than 72 bytes"


def test_changed_limits_apply_while_the_server_runs(limited: ServerProcess) -> None:
    config = Path(limited.env["BETH_CONFIG"])

    def limit_in_effect(expected: int) -> None:
        def current() -> bool:
            settings = httpx.get(f"{limited.url}/api/v1/config", timeout=10).json()["settings"]
            return settings["auth_failures_per_conversation"]["value"] == expected

        wait_until(current, what=f"the limit to become {expected}")

    write_config(config, limits_file(1))
    try:
        limit_in_effect(1)
        with client_of(limited) as client:
            conversation_id = private_conversation(client)
            assert read_messages(client, conversation_id, "guess").status_code == 403
            assert read_messages(client, conversation_id, SECRET).status_code == 429
    finally:
        write_config(config, limits_file(PER_CONVERSATION))
    limit_in_effect(PER_CONVERSATION)
    with client_of(limited) as client:  # the failure counted under the old limit still counts, but is under it now
        assert read_messages(client, conversation_id, SECRET).status_code == 200
