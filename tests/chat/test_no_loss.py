"""Nothing a turn produced is lost, and nothing is kept that should not be: database failures in the middle
of a reply, deletes racing a reply, refused turns. On both databases, over HTTP, with the fake Ollama."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from app.db.engine import close_database
from tests.api.test_graphql_web_client import create_conversation
from tests.chat.conftest import chat_env
from tests.chat.test_stream_turn import database_refusing, stored
from tests.fixtures.ollama import FakeOllama
from tests.fixtures.polling import wait_until, wait_until_async
from tests.fixtures.server import ServerProcess, run_sql, running
from tests.fixtures.web_client import ClientStream, stream_message, terminate

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


def count_rows(database_url: str, table: str, conversation_id: str) -> int:
    """Rows of `table` for one conversation, read behind the service's back (orphans included)."""
    query = f"SELECT COUNT(*) FROM {table} WHERE conversation_id = '{conversation_id}'"
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            return connection.execute(query).fetchone()[0]

    async def fetch() -> int:
        connection = await asyncpg.connect(database_url, timeout=5)
        try:
            return await connection.fetchval(query)
        finally:
            await connection.close()

    return asyncio.run(fetch())


def test_deleting_a_conversation_stops_its_reply_and_keeps_nothing_of_it(
    chat: httpx.Client, chat_ollama: FakeOllama, database_url: str
) -> None:
    conversation_id = create_conversation(chat, model="slow:latest")
    left_before = chat_ollama.disconnects.count("slow:latest")
    deleted: list[int] = []

    def delete_after_two_tokens(seen: ClientStream) -> bool:
        if len(seen.tokens) == 2 and not deleted:
            deleted.append(chat.delete(f"/api/v1/conversations/{conversation_id}").status_code)
        return False

    seen = stream_message(
        chat, model="slow:latest", message="a long story", conversation_id=conversation_id,
        on_block=delete_after_two_tokens,
    )  # fmt: skip
    assert deleted == [204]
    assert seen.terminated is not None, seen.raw
    assert not seen.ended
    assert seen.terminated["reason"] == "USER_REQUESTED"
    # the model was stopped, not left generating a reply nobody can keep
    wait_until(lambda: chat_ollama.disconnects.count("slow:latest") > left_before)
    assert chat.get(f"/api/v1/conversations/{conversation_id}/messages").status_code == 404
    for table in ("messages", "stream_sessions", "images"):
        assert count_rows(database_url, table, conversation_id) == 0, table


def test_deleting_a_turn_while_its_reply_streams_stops_the_reply_and_keeps_no_reply_to_it(
    chat: httpx.Client, database_url: str
) -> None:
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    assert stream_message(chat, model="llama3.1:8b", message="first", conversation_id=conversation_id).ended
    deleted: list[dict] = []

    def delete_the_turn(seen: ClientStream) -> bool:
        if len(seen.tokens) == 2 and not deleted:
            user = stored(chat, conversation_id)[-1]
            assert (user["sender"], user["text"]) == ("user", "second")
            url = f"/api/v1/conversations/{conversation_id}/messages"
            response = chat.delete(url, params={"fromId": user["id"]})
            assert response.status_code == 200, response.text
            deleted.append(response.json())
        return False

    seen = stream_message(
        chat, model="slow:latest", message="second", conversation_id=conversation_id, on_block=delete_the_turn
    )
    assert deleted[0]["deletedCount"] == 1
    assert seen.terminated is not None, seen.raw
    assert not seen.ended
    kept = [(m["sender"], m["text"]) for m in stored(chat, conversation_id)]
    assert kept == [("user", "first"), ("llm", "Hello from llama3.1:8b!")]
    assert count_rows(database_url, "messages", conversation_id) == 2


def test_a_message_too_long_for_the_model_is_refused_before_it_is_stored(chat: httpx.Client) -> None:
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    huge = "word " * 200_000  # 1,000,000 characters: storable, but far beyond the model's context
    seen = stream_message(chat, model="llama3.1:8b", message=huge, conversation_id=conversation_id)
    assert seen.error_payload is not None, seen.raw[:500]
    assert seen.error_payload["code"] == "CONTEXT_LENGTH_EXCEEDED"
    assert seen.session_id is None
    response = chat.post(f"/api/v1/conversations/{conversation_id}/messages", json={"text": huge, "reply": True})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "CONTEXT_LENGTH_EXCEEDED"
    assert stored(chat, conversation_id) == []
    # the conversation goes on as before
    assert stream_message(chat, model="llama3.1:8b", message="short one", conversation_id=conversation_id).ended
    assert [m["text"] for m in stored(chat, conversation_id)] == ["short one", "Hello from llama3.1:8b!"]


@pytest.fixture
def busy_server(
    database_url: str, tmp_path: Path, chat_models_dir: Path, busy_ollama: FakeOllama
) -> Iterator[ServerProcess]:
    """A chat server whose only Ollama answers 503 to every chat (a provider outage), with no retries."""
    env = chat_env(busy_ollama, chat_models_dir, PROVIDER_RETRIES="0")
    with running(ServerProcess(tmp_path, database_url, env)) as process:
        yield process


def test_a_message_to_a_provider_that_is_down_is_kept(busy_server: ServerProcess) -> None:
    with busy_server.client(timeout=60) as client:
        conversation_id = create_conversation(client, model="llama3.1:8b")
        seen = stream_message(client, model="llama3.1:8b", message="are you there?", conversation_id=conversation_id)
        assert seen.error_payload is not None, seen.raw
        assert seen.error_payload["code"] in ("OVERLOADED", "PROVIDER_UNAVAILABLE")  # transient
        assert [(m["sender"], m["text"]) for m in stored(client, conversation_id)] == [("user", "are you there?")]


def refusing_usage_writes(database_url: str) -> tuple[str, str]:
    """SQL that makes the database refuse, and then accept again, every write of usage statistics."""
    if database_url.startswith("sqlite"):
        return (
            "CREATE TRIGGER refuse_usage BEFORE INSERT ON model_usage_stats BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
            "DROP TRIGGER refuse_usage;",
        )
    return (
        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql;"
        "CREATE TRIGGER refuse_usage BEFORE INSERT ON model_usage_stats FOR EACH ROW EXECUTE FUNCTION refuse();",
        "DROP TRIGGER refuse_usage ON model_usage_stats; DROP FUNCTION refuse();",
    )


async def execute(database_url: str, statement: str) -> None:
    """`run_sql` from inside an event loop."""
    if database_url.startswith("sqlite"):
        run_sql(database_url, statement)
        return
    connection = await asyncpg.connect(database_url, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def test_usage_the_database_refuses_is_kept_and_written_once_it_accepts_again(
    empty_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    from app.db.engine import open_database
    from app.db.migrate import migrate
    from app.services.usage import UsageRecord, UsageStats

    refuse, accept = refusing_usage_writes(empty_database)

    async def scenario() -> tuple[int, int, int, int]:
        engine = await open_database(empty_database)
        try:
            await migrate()
            usage = UsageStats(attempts=2, backoff_s=0.01, retry_later_s=0.05)
            retrying = asyncio.create_task(usage.run())  # as the service's background tasks run it
            await execute(empty_database, refuse)
            await usage.record(UsageRecord(provider="ollama", model="m", status="complete", completion_tokens=3))
            await usage.record(UsageRecord(provider="ollama", model="m", status="failed"))
            waiting = usage.pending  # refused, kept
            await execute(empty_database, accept)

            async def written() -> bool:
                return usage.pending == 0

            await wait_until_async(written, within_s=10, what="the kept usage written")
            (hour_row,) = await usage.report(period="hour")
            (day_row,) = await usage.report(period="day")
            # one more, refused to the end: logged when the service stops, not silently dropped
            await execute(empty_database, refuse)
            await usage.record(UsageRecord(provider="ollama", model="m", status="complete"))
            retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retrying
            await usage.close()
            await execute(empty_database, accept)
            return waiting, hour_row.requests, day_row.requests, hour_row.errors
        finally:
            await close_database(engine)

    waiting, hour_requests, day_requests, errors = asyncio.run(scenario())
    assert waiting == 2
    assert hour_requests == day_requests == 2
    assert errors == 1
    assert "usage of a generation abandoned at shutdown" in caplog.text


def test_saving_the_reply_is_retried_when_the_database_fails_for_a_moment(
    chat: httpx.Client, database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("a failure that passes by itself needs a counter outside the transaction: a PostgreSQL sequence")
    conversation_id = create_conversation(chat, model="llama3.1:8b")
    run_sql(
        database_url,
        "CREATE SEQUENCE reply_refusals;"
        "CREATE FUNCTION refuse_twice() RETURNS trigger AS $$ BEGIN"
        " IF nextval('reply_refusals') <= 2 THEN RAISE EXCEPTION 'connection lost'; END IF; RETURN NEW; END"
        " $$ LANGUAGE plpgsql;"
        "CREATE TRIGGER refuse_reply_twice BEFORE INSERT ON messages FOR EACH ROW"
        f" WHEN (NEW.conversation_id = '{conversation_id}' AND NEW.sender = 'llm') EXECUTE FUNCTION refuse_twice();",
    )
    try:
        seen = stream_message(chat, model="llama3.1:8b", message="keep this", conversation_id=conversation_id)
    finally:
        run_sql(
            database_url,
            "DROP TRIGGER refuse_reply_twice ON messages; DROP FUNCTION refuse_twice(); DROP SEQUENCE reply_refusals;",
        )
    assert seen.error is None, seen.error_payload
    assert seen.ended
    kept = [(m["sender"], m["text"], m["status"]) for m in stored(chat, conversation_id)]
    assert kept == [("user", "keep this", "complete"), ("llm", "Hello from llama3.1:8b!", "complete")]
