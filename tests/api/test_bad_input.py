"""Bad input answers 4xx with a stable code, never 500, and leaves stored data unchanged."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.test_graphql_web_client import CREATE_CONVERSATION, DELETE_MESSAGES_AFTER, GET_MESSAGES, SEND_MESSAGE
from tests.fixtures.server import graphql, new_id
from tests.fixtures.web_client import TERMINATE_STREAM, stream_message


@pytest.fixture
def conversation_id(api: httpx.Client) -> str:
    conversation_id = new_id()
    assert api.post("/api/v1/conversations", json={"id": conversation_id, "tabName": "Stable"}).status_code == 201
    assert api.post(f"/api/v1/conversations/{conversation_id}/messages", json={"text": "original"}).status_code == 201
    return conversation_id


def snapshot(api: httpx.Client, conversation_id: str) -> tuple[dict, list[dict]]:
    conversation = api.get(f"/api/v1/conversations/{conversation_id}").json()
    messages = api.get(f"/api/v1/conversations/{conversation_id}/messages").json()["messages"]
    return conversation, messages


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in response.text


BAD_CREATES = [
    pytest.param(b'{"tabName": ', "application/json", id="truncated-json"),
    pytest.param(b"not json at all", "application/json", id="garbage"),
    pytest.param(b"{}", "application/json", id="missing-tab-name"),
    pytest.param(b'{"tabName": 42}', "application/json", id="wrong-type"),
    pytest.param(b'{"tabName": ""}', "application/json", id="empty-tab-name"),
    pytest.param(b'{"tabName": "x", "surprise": 1}', "application/json", id="unknown-field"),
    pytest.param(b'{"tabName": "x", "password": 12345}', "application/json", id="numeric-password"),
    pytest.param(b'{"tabName": "' + b"a" * 1_000_000 + b'"}', "application/json", id="1MB-tab-name"),
]


@pytest.mark.parametrize(("body", "content_type"), BAD_CREATES)
def test_bad_conversation_bodies_are_400_and_create_nothing(api: httpx.Client, body: bytes, content_type: str) -> None:
    before = api.get("/api/v1/conversations", params={"limit": 1}).json()["total"]
    response = api.post("/api/v1/conversations", content=body, headers={"content-type": content_type})
    assert_error(response, 400, "INVALID_REQUEST")
    assert api.get("/api/v1/conversations", params={"limit": 1}).json()["total"] == before


def test_malformed_json_says_so(api: httpx.Client) -> None:
    response = api.post("/api/v1/conversations", content=b'{"tabName": ', headers={"content-type": "application/json"})
    assert "not valid JSON" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"sender": "user"}, id="missing-text"),
        pytest.param({"text": "x", "sender": "robot"}, id="bad-sender"),
        pytest.param({"text": ["x"]}, id="wrong-type"),
        pytest.param({"text": "x" * 1_000_001}, id="too-long"),
        pytest.param({"text": "nul \x00 byte"}, id="nul-byte"),
    ],
)
def test_bad_messages_are_400_and_store_nothing(api: httpx.Client, conversation_id: str, body: dict) -> None:
    before = snapshot(api, conversation_id)
    response = api.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)
    assert_error(response, 400, "INVALID_REQUEST")
    assert snapshot(api, conversation_id) == before


def test_unknown_ids_are_404(api: httpx.Client, conversation_id: str) -> None:
    before = snapshot(api, conversation_id)
    assert_error(api.get("/api/v1/conversations/nope-nope"), 404, "NOT_FOUND")
    assert_error(api.get("/api/v1/conversations/nope-nope/messages"), 404, "NOT_FOUND")
    assert_error(api.delete("/api/v1/conversations/nope-nope"), 404, "NOT_FOUND")
    assert_error(api.post("/api/v1/conversations/nope-nope/messages", json={"text": "x"}), 404, "NOT_FOUND")
    response = api.delete(f"/api/v1/conversations/{conversation_id}/messages", params={"fromId": 999_999_999})
    assert_error(response, 404, "NOT_FOUND")
    assert_error(api.get("/api/v1/no-such-endpoint"), 404, "NOT_FOUND")
    assert snapshot(api, conversation_id) == before


def test_bad_query_parameters_are_400(api: httpx.Client, conversation_id: str) -> None:
    assert_error(api.get("/api/v1/conversations", params={"limit": "lots"}), 400, "INVALID_REQUEST")
    assert_error(api.get("/api/v1/conversations", params={"limit": 0}), 400, "INVALID_REQUEST")
    response = api.delete(f"/api/v1/conversations/{conversation_id}/messages", params={"fromId": "user-17"})
    assert_error(response, 400, "INVALID_REQUEST")


def test_duplicate_id_is_409_and_keeps_the_original(api: httpx.Client, conversation_id: str) -> None:
    before = snapshot(api, conversation_id)
    response = api.post("/api/v1/conversations", json={"id": conversation_id, "tabName": "Impostor"})
    assert_error(response, 409, "CONFLICT")
    assert snapshot(api, conversation_id) == before


def test_oversized_body_is_413(api: httpx.Client, conversation_id: str) -> None:
    huge = b'{"text": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    response = api.post(
        f"/api/v1/conversations/{conversation_id}/messages", content=huge, headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


UNICODE_AND_SQL = [
    "Grüße, 世界! 🚀🦙 — ‘quotes’ \u200b zero-width",
    "'; DROP TABLE conversations; --",
    "Robert'); DELETE FROM messages WHERE ('1'='1",
    "%_\\ LIKE wildcards and backslashes \\\\",
    "line\nbreaks\r\nand\ttabs",
]


@pytest.mark.parametrize("text", UNICODE_AND_SQL)
def test_unicode_and_sql_metacharacters_round_trip_exactly(api: httpx.Client, text: str) -> None:
    conversation_id = new_id()
    created = graphql(api, CREATE_CONVERSATION, {"input": {"id": conversation_id, "tabName": text[:255]}})
    assert created["data"]["createConversation"]["conversation"]["tabName"] == text[:255]
    sent = graphql(api, SEND_MESSAGE, {"input": {"conversationId": conversation_id, "text": text, "sender": "llm"}})
    assert sent["data"]["addMessage"]["userMessage"]["text"] == text
    messages = graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert [m["text"] for m in messages] == [text]
    assert api.get("/api/v1/conversations", params={"limit": 1}).status_code == 200


def test_graphql_input_errors_keep_the_old_messages(api: httpx.Client) -> None:
    empty = graphql(api, CREATE_CONVERSATION, {"input": {"id": "", "tabName": ""}})
    assert empty["errors"][0]["message"] == "Conversation ID and tab name are required"
    assert empty["errors"][0]["extensions"]["code"] == "INVALID_REQUEST"
    conversation_id = new_id()
    graphql(api, CREATE_CONVERSATION, {"input": {"id": conversation_id, "tabName": "t"}})
    blank = graphql(api, SEND_MESSAGE, {"input": {"conversationId": conversation_id, "text": "", "sender": "user"}})
    assert blank["errors"][0]["message"] == "Message text and sender are required"
    robot = graphql(api, SEND_MESSAGE, {"input": {"conversationId": conversation_id, "text": "x", "sender": "robot"}})
    assert robot["errors"][0]["message"] == 'Sender must be either "user" or "llm"'
    huge = graphql(api, CREATE_CONVERSATION, {"input": {"id": new_id(), "tabName": "a" * 1_000_000}})
    assert huge["errors"][0]["extensions"]["code"] == "INVALID_REQUEST"
    assert graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"] == []


def test_a_lone_surrogate_is_refused_as_malformed_json_by_graphql_and_rest(api: httpx.Client) -> None:
    """`"\\ud800"` is valid JSON syntax for a string no database can store (it is not Unicode text)."""
    conversation_id = new_id()
    graphql(api, CREATE_CONVERSATION, {"input": {"id": conversation_id, "tabName": "t"}})
    operations = [  # (operation, its variables as raw JSON: json.dumps would escape the backslash)
        (SEND_MESSAGE, f'"input": {{"conversationId": "{conversation_id}", "text": "a\\ud800b", "sender": "llm"}}'),
        (CREATE_CONVERSATION, f'"input": {{"id": "{new_id()}", "tabName": "tab \\udfff"}}'),
    ]
    for query, variables in operations:
        body = '{"query": ' + json.dumps(query) + ', "variables": {' + variables + "}}"
        response = api.post("/graphql", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
    rest = api.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        content='{"text": "a\\ud800b", "sender": "llm"}',
        headers={"content-type": "application/json"},
    )
    assert_error(rest, 400, "INVALID_REQUEST")
    assert graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"] == []
    assert api.get("/health/ready").status_code == 200


def test_a_nul_in_an_id_or_a_model_name_is_not_found_or_refused_everywhere(api: httpx.Client) -> None:
    """No stored id holds a NUL (creation refuses it), and PostgreSQL cannot even compare one: not found."""
    for response in (
        api.get("/api/v1/conversations/a%00b"),
        api.get("/api/v1/conversations/a%00b/messages"),
        api.delete("/api/v1/conversations/a%00b"),
    ):
        assert_error(response, 404, "NOT_FOUND")
    assert_error(api.get("/api/v1/model-configs/hf/a%00b"), 404, "MODEL_NOT_FOUND")
    for response in (
        api.get("/api/images/a%00b"),
        api.get("/api/images/a%00b/info"),
        api.delete("/api/images/a%00b"),
        api.get("/api/images/conversation/a%00b"),
    ):
        assert_error(response, 404, "NOT_FOUND")
    usage = api.get("/api/v1/usage", params={"model": "a\x00b", "provider": "hf\x00"})
    assert usage.status_code == 200, usage.text
    assert usage.json()["rows"] == []
    found = graphql(api, "query($id: String!) { conversation(id: $id) { id } }", {"id": "a\x00b"})
    assert found["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    conversation_id = new_id()
    graphql(api, CREATE_CONVERSATION, {"input": {"id": conversation_id, "tabName": "t"}})
    for conversation, message in (("a\x00b", "Conversation not found"), (conversation_id, "Stream session not found")):
        terminated = graphql(
            api,
            TERMINATE_STREAM,
            {"input": {"sessionId": "s\x00", "conversationId": conversation, "password": None, "reason": None}},
        )["data"]["terminateStream"]
        assert (terminated["success"], terminated["message"]) == (False, message)
    seen = stream_message(api, model="m", message="hi", conversation_id="a\x00b")
    assert seen.error_payload is not None
    assert seen.error_payload["code"] == "NOT_FOUND"
    # a model name is stored with the turn: one with a NUL is refused before anything is saved
    turn = api.post(
        f"/api/v1/conversations/{conversation_id}/messages", json={"text": "hi", "model": "a\x00b", "reply": True}
    )
    assert_error(turn, 400, "INVALID_REQUEST")
    assert graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"] == []


def test_numbers_past_what_a_database_or_a_date_holds_are_refused(api: httpx.Client) -> None:
    assert_error(api.get("/api/v1/conversations", params={"offset": 10**30}), 400, "INVALID_REQUEST")
    far_page = api.get("/api/v1/conversations", params={"offset": 2**62})
    assert far_page.status_code == 200, far_page.text
    assert far_page.json()["conversations"] == []
    for since in (str(10**30), "99999999999999999"):
        assert_error(api.get("/api/v1/usage", params={"since": since}), 400, "INVALID_REQUEST")
    conversation_id = new_id()
    graphql(api, CREATE_CONVERSATION, {"input": {"id": conversation_id, "tabName": "t"}})
    too_big = 2**31  # past any message id (PostgreSQL's serial is 32 bits)
    deleted = api.delete(f"/api/v1/conversations/{conversation_id}/messages", params={"fromId": too_big})
    assert_error(deleted, 404, "NOT_FOUND")
    after = graphql(api, DELETE_MESSAGES_AFTER, {"conversationId": conversation_id, "messageId": str(too_big)})
    result = after["data"]["deleteMessagesAfter"]
    assert (result["success"], result["message"], result["deletedCount"]) == (False, "Message not found", 0)


def test_graphql_syntax_and_type_errors_are_reported_not_crashes(api: httpx.Client) -> None:
    broken = api.post("/graphql", json={"query": "{ conversations { "})
    assert broken.status_code in (200, 400)
    assert broken.json()["errors"]
    wrong_type = api.post(
        "/graphql",
        json={"query": "query($id: String!) { messages(conversationId: $id) { id } }", "variables": {"id": 5}},
    )
    assert wrong_type.status_code in (200, 400)
    assert wrong_type.json()["errors"]
    not_json = api.post("/graphql", content=b"{{{", headers={"content-type": "application/json"})
    assert 400 <= not_json.status_code < 500
