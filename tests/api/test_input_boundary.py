"""The web client's GraphQL arguments and the legacy stream route follow the same input rules as REST."""

from __future__ import annotations

import httpx

from tests.api.test_graphql_web_client import CREATE_CONVERSATION, GET_MESSAGES, SEND_MESSAGE
from tests.fixtures.server import graphql, new_id
from tests.fixtures.web_client import stream_message


def test_a_nul_in_a_graphql_argument_is_refused_and_nothing_is_stored(api: httpx.Client) -> None:
    refused_id = new_id()
    created = graphql(api, CREATE_CONVERSATION, {"input": {"id": refused_id, "tabName": "t\x00"}})
    assert created["errors"][0]["extensions"]["code"] == "INVALID_REQUEST"
    assert "tabName contains a NUL character" in created["errors"][0]["message"]
    assert api.get(f"/api/v1/conversations/{refused_id}").status_code == 404

    conversation_id = new_id()
    graphql(api, CREATE_CONVERSATION, {"input": {"id": conversation_id, "tabName": "t"}})
    for sender in ("llm", "user"):
        sent = graphql(
            api, SEND_MESSAGE, {"input": {"conversationId": conversation_id, "text": "a\x00b", "sender": sender}}
        )
        assert sent["errors"][0]["extensions"]["code"] == "INVALID_REQUEST"
    assert graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"] == []


def test_a_nul_in_the_legacy_stream_message_is_refused_before_anything_is_saved(api: httpx.Client) -> None:
    conversation_id = new_id()
    graphql(api, CREATE_CONVERSATION, {"input": {"id": conversation_id, "tabName": "t"}})
    seen = stream_message(api, model="m", message="a\x00b", conversation_id=conversation_id)
    assert seen.error_payload is not None
    assert seen.error_payload["code"] == "INVALID_REQUEST"
    assert graphql(api, GET_MESSAGES, {"conversationId": conversation_id})["data"]["messages"] == []
