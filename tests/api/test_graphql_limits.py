"""What one GraphQL request may ask for, and how the requests it refuses are answered.

Aliases run a field once each, so one request could otherwise check a hundred passwords or list every
conversation a thousand times. Refusals are GraphQL errors with `extensions.code`, and nothing runs.
"""

from __future__ import annotations

import httpx
import pytest
from graphql import get_introspection_query

from tests.api.test_graphql_web_client import CREATE_CONVERSATION, TERMINATE_STREAM
from tests.fixtures.server import graphql, new_id

SECRET = "correct horse"


def refused(body: dict, limit: str | None) -> None:
    """Refused as a whole (nothing ran), naming the limit; `None` for the token limit, met while parsing."""
    assert body.get("data") is None, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "INVALID_REQUEST", error
    if limit is not None:
        assert error["extensions"]["details"]["limit"] == limit, error


def private_conversation(api: httpx.Client) -> str:
    conversation_id = new_id()
    created = api.post("/api/v1/conversations", json={"id": conversation_id, "tabName": "t", "password": SECRET})
    assert created.status_code == 201, created.text
    return conversation_id


def test_many_aliased_password_guesses_are_refused_before_any_runs(api: httpx.Client) -> None:
    conversation_id = private_conversation(api)

    def guesses(count: int) -> str:
        return " ".join(
            f'g{i}: terminateStream(input: {{sessionId: "none", conversationId: "{conversation_id}", '
            f'password: "guess{i}"}}) {{ success message }}'
            for i in range(count)
        )

    refused(graphql(api, f"mutation {{ {guesses(100)} }}"), None)
    refused(graphql(api, f"mutation {{ {guesses(3)} }}"), "passwordFields")
    three = " ".join(
        f'v{i}: verifyPassword(input: {{conversationId: "{conversation_id}", password: "guess{i}"}}) {{ message }}'
        for i in range(3)
    )
    refused(graphql(api, f"mutation {{ {three} }}"), "passwordFields")


def test_password_fields_are_counted_through_fragments_and_two_are_allowed(api: httpx.Client) -> None:
    conversation_id = private_conversation(api)
    variables = {"id": conversation_id, "password": SECRET}
    two = """query($id: String!, $password: String) {
      conversation(id: $id, password: $password) { id }
      messages(conversationId: $id, password: $password) { id } }"""
    body = graphql(api, two, variables)
    assert "errors" not in body, body
    assert body["data"]["conversation"]["id"] == conversation_id
    hidden = """query($id: String!, $password: String) { ...Reads  c2: conversation(id: $id, password: $password) { id } }
      fragment Reads on Query {
        conversation(id: $id, password: $password) { id }
        messages(conversationId: $id, password: $password) { id } }"""
    refused(graphql(api, hidden, variables), "passwordFields")


def test_alias_fields_and_depth_floods_are_refused(api: httpx.Client) -> None:
    def lists(count: int) -> str:
        return "{ " + " ".join(f"a{i}: conversations {{ count }}" for i in range(count)) + " }"

    assert "errors" not in graphql(api, lists(15))
    refused(graphql(api, lists(16)), "aliases")
    refused(graphql(api, lists(500)), None)  # past the token limit: not even parsed
    fields = " ".join(["count"] * 600)
    refused(graphql(api, f"{{ conversations {{ {fields} }} }}"), "fields")
    deep = "{ __schema { types { " + "ofType { " * 25 + "name" + " }" * 25 + " } } }"
    refused(graphql(api, deep), "depth")
    huge = graphql(api, "{ " + "conversations { count } " * 1000 + "}")
    refused(huge, None)
    assert "tokens" in huge["errors"][0]["message"]


def test_the_web_client_and_graphiql_fit_the_limits(api: httpx.Client) -> None:
    conversation_id = new_id()
    created = graphql(api, CREATE_CONVERSATION, {"input": {"id": conversation_id, "tabName": "t"}})
    assert created["data"]["createConversation"]["conversation"]["id"] == conversation_id
    introspection = graphql(api, get_introspection_query(descriptions=True))
    assert "errors" not in introspection
    assert introspection["data"]["__schema"]["queryType"]["name"] == "Query"
    unknown = {"sessionId": "stream_x", "conversationId": conversation_id, "password": None, "reason": None}
    terminated = graphql(api, TERMINATE_STREAM, {"input": unknown})["data"]["terminateStream"]
    assert terminated["message"] == "Stream session not found"


@pytest.mark.parametrize("body", [b"42", b'"x"', b"null", b"true", b"[1]"])
def test_a_body_that_is_not_a_graphql_request_is_a_400(api: httpx.Client, body: bytes) -> None:
    response = api.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "INVALID_REQUEST"
    assert error["message"]


def test_a_variable_of_the_wrong_type_is_a_client_error_with_its_real_message(api: httpx.Client) -> None:
    body = graphql(api, "query($c: String!) { messages(conversationId: $c) { id } }", {"c": 123})
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["message"] != "Unexpected error."
    assert "String cannot represent a non string value" in error["message"]
    assert error["extensions"]["code"] == "INVALID_REQUEST"
