"""Nothing a turn produced is lost, and nothing is kept that should not be: database failures in the middle
of a reply, deletes racing a reply, refused turns. On both databases, over HTTP, with the fake Ollama."""

from __future__ import annotations

import httpx

from tests.api.test_graphql_web_client import create_conversation
from tests.chat.test_stream_turn import database_refusing, stored
from tests.fixtures.server import ServerProcess
from tests.fixtures.web_client import stream_message, terminate

STEADY_TEXT = "".join(f"step{i} " for i in range(10))


def test_a_database_error_while_flushing_the_partial_reply_does_not_stop_it(
    chat: httpx.Client, chat_server: ServerProcess, database_url: str
) -> None:
    conversation_id = create_conversation(chat, model="steady:latest")
    with database_refusing(database_url, conversation_id, "refuse_flush"):
        seen = stream_message(chat, model="steady:latest", message="take your time", conversation_id=conversation_id)
    assert seen.error is None, seen.error_payload
    assert seen.ended
    assert seen.text == STEADY_TEXT
    assert f"flushing the partial reply of session {seen.session_id} failed" in chat_server.logs()  # it was refused
    reply = stored(chat, conversation_id)[-1]
    assert (reply["sender"], reply["text"], reply["status"]) == ("llm", STEADY_TEXT, "complete")
    # the session row was closed, not left ACTIVE for a recovery sweep
    again = terminate(chat, seen.session_id, conversation_id)
    assert again["success"] is False
    assert again["message"] == "Session is in COMPLETED state and cannot be terminated"
