"""Private conversations: the password is required on every read, write and delete, in REST and GraphQL."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from piccolo.querystring import QueryString

from app.db.backends import create_engine
from tests.api.test_graphql_web_client import (
    DELETE_CONVERSATION,
    DELETE_MESSAGES_AFTER,
    GET_CONVERSATIONS,
    SEND_MESSAGE,
    TERMINATE_STREAM,
)
from tests.fixtures.server import ServerProcess, graphql, new_id

SECRET = "correct horse battery staple"

CONVERSATION = "query($id: String!, $password: String) { conversation(id: $id, password: $password) { id messageCount messages { text } } }"
MESSAGES = "query($id: String!, $password: String) { messages(conversationId: $id, password: $password) { text } }"
VERIFY = "mutation($input: VerifyPasswordInput!) { verifyPassword(input: $input) { message conversationId tabName } }"
DELETE_WITH_PASSWORD = """mutation($id: String!, $password: String) {
  deleteConversation(conversationId: $id, password: $password) { message success } }"""
DELETE_AFTER_WITH_PASSWORD = """mutation($id: ID!, $mid: ID!, $password: String) {
  deleteMessagesAfter(conversationId: $id, messageId: $mid, password: $password) { message deletedCount success } }"""


@pytest.fixture
def private_id(api: httpx.Client) -> str:
    conversation_id = new_id()
    response = api.post("/api/v1/conversations", json={"id": conversation_id, "tabName": "Diary", "password": SECRET})
    assert response.status_code == 201, response.text
    assert response.json()["isPrivate"] is True
    added = api.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"text": "dear diary", "sender": "user"},
        headers={"X-Conversation-Password": SECRET},
    )
    assert added.status_code == 201, added.text
    return conversation_id


def stored_texts(api: httpx.Client, conversation_id: str) -> list[str]:
    response = api.get(f"/api/v1/conversations/{conversation_id}/messages", headers={"X-Conversation-Password": SECRET})
    assert response.status_code == 200, response.text
    return [m["text"] for m in response.json()["messages"]]


@pytest.mark.parametrize(
    ("password", "status", "reason"),
    [(None, 401, "password_required"), ("wrong", 403, "invalid_password")],
)
def test_rest_refuses_every_operation_without_the_right_password(
    api: httpx.Client, private_id: str, password: str | None, status: int, reason: str
) -> None:
    headers = {"X-Conversation-Password": password} if password else {}
    base = f"/api/v1/conversations/{private_id}"
    first_id = api.get(f"{base}/messages", headers={"X-Conversation-Password": SECRET}).json()["messages"][0]["id"]
    attempts = [
        api.get(base, headers=headers),
        api.get(f"{base}/messages", headers=headers),
        api.post(f"{base}/messages", json={"text": "intruder", "sender": "user"}, headers=headers),
        api.delete(f"{base}/messages", params={"fromId": first_id}, headers=headers),
        api.delete(base, headers=headers),
    ]
    for response in attempts:
        assert response.status_code == status, (response.request.method, response.request.url, response.text)
        error = response.json()["error"]
        assert error["code"] == "UNAUTHORIZED"
        assert error["details"]["reason"] == reason
    assert stored_texts(api, private_id) == ["dear diary"]


def test_rest_allows_every_operation_with_the_password(api: httpx.Client, private_id: str) -> None:
    headers = {"X-Conversation-Password": SECRET}
    base = f"/api/v1/conversations/{private_id}"
    assert api.get(base, headers=headers).json()["messageCount"] == 1
    added = api.post(f"{base}/messages", json={"text": "second", "sender": "llm"}, headers=headers)
    assert added.status_code == 201
    deleted = api.delete(f"{base}/messages", params={"fromId": added.json()["id"]}, headers=headers)
    assert deleted.status_code == 200
    assert deleted.json()["deletedCount"] == 1
    verified = api.post(f"{base}/verify-password", json={"password": SECRET})
    assert verified.status_code == 200
    assert verified.json() == {
        "conversationId": private_id,
        "tabName": "Diary",
        "verified": True,
    }
    assert api.post(f"{base}/verify-password", json={"password": "nope"}).status_code == 403
    assert api.delete(base, headers=headers).status_code == 204
    assert api.get(base, headers=headers).status_code == 404


def test_private_conversations_are_not_listed(api: httpx.Client, private_id: str) -> None:
    listed = [c["id"] for c in graphql(api, GET_CONVERSATIONS)["data"]["conversations"]["conversations"]]
    assert private_id not in listed
    page = api.get("/api/v1/conversations", params={"limit": 200}).json()
    assert private_id not in [c["id"] for c in page["conversations"]]


def test_graphql_reads_need_the_password(api: httpx.Client, private_id: str) -> None:
    for query in (CONVERSATION, MESSAGES):
        missing = graphql(api, query, {"id": private_id})
        assert missing["data"] is None
        assert missing["errors"][0]["message"] == "Password required for private conversation"
        assert missing["errors"][0]["extensions"]["code"] == "UNAUTHORIZED"
        wrong = graphql(api, query, {"id": private_id, "password": "wrong"})
        assert wrong["errors"][0]["message"] == "Invalid password"
    opened = graphql(api, CONVERSATION, {"id": private_id, "password": SECRET})["data"]["conversation"]
    assert opened["messageCount"] == 1
    assert opened["messages"] == [{"text": "dear diary"}]
    assert graphql(api, MESSAGES, {"id": private_id, "password": SECRET})["data"]["messages"] == [
        {"text": "dear diary"}
    ]


def test_graphql_writes_and_deletes_need_the_password(api: httpx.Client, private_id: str) -> None:
    sent = graphql(api, SEND_MESSAGE, {"input": {"conversationId": private_id, "text": "intruder", "sender": "user"}})
    assert sent["data"] is None
    assert sent["errors"][0]["message"] == "Password required for private conversation"

    message_id = api.get(
        f"/api/v1/conversations/{private_id}/messages", headers={"X-Conversation-Password": SECRET}
    ).json()["messages"][0]["id"]
    # The old web client's exact operations carry no password: they must fail without deleting anything.
    after = graphql(api, DELETE_MESSAGES_AFTER, {"conversationId": private_id, "messageId": message_id})
    assert after["data"]["deleteMessagesAfter"]["success"] is False
    dropped = graphql(api, DELETE_CONVERSATION, {"conversationId": private_id})
    assert dropped["data"]["deleteConversation"]["success"] is False
    assert dropped["data"]["deleteConversation"]["message"] == "Password required for private conversation"
    terminated = graphql(
        api,
        TERMINATE_STREAM,
        {"input": {"sessionId": "s", "conversationId": private_id, "password": None, "reason": None}},
    )["data"]["terminateStream"]
    assert terminated["success"] is False
    assert terminated["message"] == "Password required for private conversation"
    assert stored_texts(api, private_id) == ["dear diary"]

    wrong = graphql(api, DELETE_WITH_PASSWORD, {"id": private_id, "password": "wrong"})["data"]["deleteConversation"]
    assert wrong == {"message": "Invalid password", "success": False}
    cleared = graphql(api, DELETE_AFTER_WITH_PASSWORD, {"id": private_id, "mid": message_id, "password": SECRET})
    assert cleared["data"]["deleteMessagesAfter"]["deletedCount"] == 1
    deleted = graphql(api, DELETE_WITH_PASSWORD, {"id": private_id, "password": SECRET})["data"]["deleteConversation"]
    assert deleted == {"message": "Conversation deleted successfully", "success": True}


def test_verify_password_follows_the_old_rules(api: httpx.Client, private_id: str) -> None:
    ok = graphql(api, VERIFY, {"input": {"conversationId": private_id, "password": SECRET}})["data"]["verifyPassword"]
    assert ok == {"message": "Password verified successfully", "conversationId": private_id, "tabName": "Diary"}
    cases = [
        ({"conversationId": private_id, "password": ""}, "Password is required"),
        ({"conversationId": "missing-conversation", "password": "x"}, "Conversation not found"),
        ({"conversationId": private_id, "password": "wrong"}, "Invalid password"),
    ]
    for variables, message in cases:
        body = graphql(api, VERIFY, {"input": variables})
        assert body["errors"][0]["message"] == message
    public_id = new_id()
    api.post("/api/v1/conversations", json={"id": public_id, "tabName": "open"})
    body = graphql(api, VERIFY, {"input": {"conversationId": public_id, "password": "x"}})
    assert body["errors"][0]["message"] == "This conversation is not password protected"


def test_the_password_is_stored_as_a_bcrypt_hash(api: httpx.Client, private_id: str, server: ServerProcess) -> None:
    async def read_hash() -> str:
        engine = create_engine(server.database_url)
        rows = await engine.run_querystring(
            QueryString("SELECT password_hash FROM conversations WHERE id = {}", private_id)
        )
        return rows[0]["password_hash"]

    stored = asyncio.run(read_hash())
    assert stored.startswith("$2")
    assert SECRET not in stored
