"""Every GraphQL operation the old web client sends (docs/compatibility.md, "GraphQL schema"), with exactly its selections.

The queries are written as Apollo sends them (it adds `__typename`), and the answers are checked
field by field against the shapes the client reads.
"""

from __future__ import annotations

import re

import httpx

from tests.fixtures.server import graphql, new_id
from tests.fixtures.web_client import TERMINATE_STREAM

DIGITS = re.compile(r"^\d{13}$")

GET_CONVERSATIONS = """
query GetConversations {
  conversations {
    conversations { id tabName llmModel isPrivate createdAt updatedAt messageCount __typename }
    count
    __typename
  }
}"""

GET_MESSAGES = """
query GetMessages($conversationId: String!) {
  messages(conversationId: $conversationId) {
    id text sender timestamp hasImages
    images { id filename fileSize mimeType contentHash createdAt url __typename }
    __typename
  }
}"""

GET_AVAILABLE_MODELS = """
query GetAvailableModels { availableModels { models count __typename } }"""

CREATE_CONVERSATION = """
mutation CreateConversation($input: CreateConversationInput!) {
  createConversation(input: $input) {
    message
    conversation { id tabName llmModel isPrivate createdAt updatedAt __typename }
    __typename
  }
}"""

DELETE_CONVERSATION = """
mutation DeleteConversation($conversationId: String!) {
  deleteConversation(conversationId: $conversationId) { message conversationId success __typename }
}"""

DELETE_MESSAGES_AFTER = """
mutation DeleteMessagesAfter($conversationId: ID!, $messageId: ID!) {
  deleteMessagesAfter(conversationId: $conversationId, messageId: $messageId) {
    message deletedCount success __typename
  }
}"""

SEND_MESSAGE = """
mutation SendMessage($input: AddMessageInput!) {
  addMessage(input: $input) {
    message
    userMessage { id text sender timestamp hasImages images { id filename fileSize mimeType contentHash createdAt } }
    llmMessage { id text sender timestamp }
    llmModel error llmResponseTime
    __typename
  }
}"""


def create_conversation(api: httpx.Client, tab_name: str = "Chat", model: str = "llama3.1:8b") -> str:
    conversation_id = new_id()
    body = graphql(
        api,
        CREATE_CONVERSATION,
        {"input": {"id": conversation_id, "tabName": tab_name, "llmModel": model, "password": None}},
    )
    assert "errors" not in body, body
    return conversation_id


def add_message(api: httpx.Client, conversation_id: str, text: str, sender: str) -> dict:
    body = graphql(api, SEND_MESSAGE, {"input": {"conversationId": conversation_id, "text": text, "sender": sender}})
    assert "errors" not in body, body
    return body["data"]["addMessage"]


def test_create_conversation_returns_the_fields_the_client_reads(api: httpx.Client) -> None:
    conversation_id = new_id()
    body = graphql(
        api,
        CREATE_CONVERSATION,
        {
            "input": {
                "id": conversation_id,
                "tabName": "Ideas 💡",
                "llmModel": "hf/SmolLM2-135M-Instruct",
                "password": None,
            }
        },
    )
    created = body["data"]["createConversation"]
    assert created["message"] == "Conversation created successfully"
    conversation = created["conversation"]
    assert set(conversation) == {"id", "tabName", "llmModel", "isPrivate", "createdAt", "updatedAt", "__typename"}
    assert conversation["id"] == conversation_id
    assert conversation["tabName"] == "Ideas 💡"
    assert conversation["llmModel"] == "hf/SmolLM2-135M-Instruct"
    assert conversation["isPrivate"] is False
    assert DIGITS.match(conversation["createdAt"])
    assert conversation["updatedAt"] == conversation["createdAt"]
    assert conversation["__typename"] == "Conversation"


def test_get_conversations_lists_public_ones_newest_activity_first(api: httpx.Client) -> None:
    older = create_conversation(api, "older")
    newer = create_conversation(api, "newer")
    add_message(api, older, "bump me to the top", "user")

    body = graphql(api, GET_CONVERSATIONS)
    listing = body["data"]["conversations"]
    assert listing["__typename"] == "ConversationList"
    assert listing["count"] == len(listing["conversations"])
    ids = [c["id"] for c in listing["conversations"]]
    assert ids.index(older) < ids.index(newer)
    first = next(c for c in listing["conversations"] if c["id"] == older)
    assert set(first) == {
        "id", "tabName", "llmModel", "isPrivate", "createdAt", "updatedAt", "messageCount", "__typename",
    }  # fmt: skip
    assert first["messageCount"] == 1
    assert DIGITS.match(first["updatedAt"])
    assert int(first["updatedAt"]) >= int(first["createdAt"])


def test_get_messages_returns_messages_in_order_with_image_fields(api: httpx.Client) -> None:
    conversation_id = create_conversation(api)
    add_message(api, conversation_id, "Hello", "user")
    add_message(api, conversation_id, "Hi! How can I help?", "llm")

    messages = graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert [(m["text"], m["sender"]) for m in messages] == [("Hello", "user"), ("Hi! How can I help?", "llm")]
    for message in messages:
        assert set(message) == {"id", "text", "sender", "timestamp", "hasImages", "images", "__typename"}
        assert message["id"].isdigit()
        assert DIGITS.match(message["timestamp"])
        assert message["hasImages"] is False
        assert message["images"] == []
        assert message["__typename"] == "Message"


def test_available_models_is_a_list_of_strings(api: httpx.Client) -> None:
    models = graphql(api, GET_AVAILABLE_MODELS)["data"]["availableModels"]
    assert models["__typename"] == "AvailableModelsResponse"
    assert isinstance(models["models"], list)
    assert all(isinstance(m, str) for m in models["models"])
    assert models["count"] == len(models["models"])


def test_send_message_stores_the_user_turn_and_explains_the_missing_reply(api: httpx.Client) -> None:
    conversation_id = create_conversation(api, model="llama3.1:8b")
    result = add_message(api, conversation_id, "What is 2+2?", "user")
    assert result["message"] == "Message added successfully"
    assert result["userMessage"]["text"] == "What is 2+2?"
    assert result["userMessage"]["sender"] == "user"
    assert result["llmMessage"] is None
    assert result["llmModel"] == "llama3.1:8b"
    assert result["error"]  # says why there is no reply; the user message is kept
    messages = graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert [m["text"] for m in messages] == ["What is 2+2?"]


def test_delete_messages_after_deletes_the_target_and_later_messages_by_order(api: httpx.Client) -> None:
    conversation_id = create_conversation(api)
    ids = [add_message(api, conversation_id, f"m{i}", "user")["userMessage"]["id"] for i in range(4)]

    result = graphql(api, DELETE_MESSAGES_AFTER, {"conversationId": conversation_id, "messageId": ids[1]})
    assert result["data"]["deleteMessagesAfter"] == {
        "message": "Deleted 3 messages",
        "deletedCount": 3,
        "success": True,
        "__typename": "DeleteMessagesResponse",
    }
    messages = graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert [m["text"] for m in messages] == ["m0"]


def test_delete_messages_after_with_a_temporary_client_id_fails_softly(api: httpx.Client) -> None:
    conversation_id = create_conversation(api)
    add_message(api, conversation_id, "keep me", "user")
    result = graphql(api, DELETE_MESSAGES_AFTER, {"conversationId": conversation_id, "messageId": "user-1721840000123"})
    assert result["data"]["deleteMessagesAfter"]["success"] is False
    assert result["data"]["deleteMessagesAfter"]["deletedCount"] == 0
    messages = graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"]
    assert [m["text"] for m in messages] == ["keep me"]


def test_delete_conversation_removes_it_and_its_messages(api: httpx.Client) -> None:
    conversation_id = create_conversation(api)
    add_message(api, conversation_id, "bye", "user")
    result = graphql(api, DELETE_CONVERSATION, {"conversationId": conversation_id})
    assert result["data"]["deleteConversation"] == {
        "message": "Conversation deleted successfully",
        "conversationId": conversation_id,
        "success": True,
        "__typename": "DeleteConversationResponse",
    }
    listing = graphql(api, GET_CONVERSATIONS)["data"]["conversations"]["conversations"]
    assert conversation_id not in [c["id"] for c in listing]
    again = graphql(api, DELETE_CONVERSATION, {"conversationId": conversation_id})["data"]["deleteConversation"]
    assert again["success"] is False
    assert again["message"] == "Conversation not found"


def test_terminate_stream_for_an_unknown_session_answers_the_old_failure_shape(api: httpx.Client) -> None:
    conversation_id = create_conversation(api)
    result = graphql(
        api,
        TERMINATE_STREAM,
        {
            "input": {
                "sessionId": "stream_abc_123456",
                "conversationId": conversation_id,
                "password": None,
                "reason": None,
            }
        },
    )["data"]["terminateStream"]
    assert result == {
        "success": False,
        "sessionId": "stream_abc_123456",
        "message": "Stream session not found",
        "partialResponse": "",
        "tokenCount": 0,
        "finalStatus": "ERROR",
        "terminationReason": "ERROR",
        "error": "Session not found",
        "__typename": "TerminateStreamResponse",
    }


def test_graphql_errors_carry_the_old_message_and_a_stable_code(api: httpx.Client) -> None:
    body = graphql(api, GET_MESSAGES, {"conversationId": "does-not-exist"})
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["message"] == "Conversation not found"
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert "stacktrace" not in str(error)


def test_add_message_errors_carry_the_old_text_and_a_stable_code(api: httpx.Client) -> None:
    """Refusals are GraphQL errors with the old text and `extensions.code`; a reply that could not be made
    keeps its old text in `error`, with the code beside it in `errorCode` (a field the client never selects)."""

    def send(conversation_id: str, sender: str) -> dict:
        variables = {"input": {"conversationId": conversation_id, "text": "What is 2+2?", "sender": sender}}
        return graphql(api, SEND_MESSAGE, variables)

    for conversation_id, sender, text, code in (
        ("does-not-exist", "user", "Conversation not found", "NOT_FOUND"),
        (create_conversation(api), "bot", 'Sender must be either "user" or "llm"', "INVALID_REQUEST"),
    ):
        body = send(conversation_id, sender)
        assert body["data"] is None
        (error,) = body["errors"]
        assert (error["message"], error["extensions"]["code"]) == (text, code)
        assert error["path"] == ["addMessage"]

    conversation_id = create_conversation(api, model="llama3.1:8b")  # no Ollama answers on this server
    variables = {"input": {"conversationId": conversation_id, "text": "What is 2+2?", "sender": "user"}}
    added = graphql(
        api, "mutation($input: AddMessageInput!) { addMessage(input: $input) { error errorCode } }", variables
    )
    assert "errors" not in added, added
    failure = added["data"]["addMessage"]
    assert failure["error"]
    assert failure["errorCode"] == "PROVIDER_UNAVAILABLE"
    # the old client's selection is unchanged: the same failure, without the new field
    old = add_message(api, conversation_id, "What is 2+2?", "user")
    assert old["error"] == failure["error"]
    assert "errorCode" not in old


def test_duplicate_conversation_id_is_refused(api: httpx.Client) -> None:
    conversation_id = create_conversation(api)
    body = graphql(api, CREATE_CONVERSATION, {"input": {"id": conversation_id, "tabName": "again"}})
    assert body["data"] is None
    assert body["errors"][0]["message"] == "Conversation ID already exists"
    assert body["errors"][0]["extensions"]["code"] == "CONFLICT"


def test_graphql_ide_is_served_on_get(api: httpx.Client) -> None:
    response = api.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()
