"""Many clients at once: streams over both stream endpoints in threads, and what the server stored.

Each stream runs in its own conversation, so what the database holds for it can be told apart. A
client records what it received even when the connection breaks (a killed server), never raising.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.fixtures.polling import wait_until
from tests.fixtures.server import ServerProcess, new_id
from tests.fixtures.web_client import ClientStream, consume_block

KINDS = ("rest", "legacy")  # POST /api/v1/conversations/{id}/messages (typed events), POST /api/stream-message


@dataclass
class Outcome:
    """What one client saw of its stream."""

    kind: str
    conversation_id: str
    message: str
    tokens: list[str] = field(default_factory=list)
    session_id: str | None = None
    last_event: str | None = None  # end | terminated | error | None (the connection ended without one)
    error: str | None = None  # the error event's message, or the transport failure
    done: bool = False  # the client's call returned (it did not hang)

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def create_conversation(client: httpx.Client, model: str) -> str:
    conversation_id = new_id()
    response = client.post("/api/v1/conversations", json={"id": conversation_id, "tabName": "rel", "llmModel": model})
    assert response.status_code == 201, response.text
    return conversation_id


def _typed_stream(client: httpx.Client, outcome: Outcome, model: str) -> None:
    body = {"text": outcome.message, "stream": True, "model": model}
    with client.stream("POST", f"/api/v1/conversations/{outcome.conversation_id}/messages", json=body) as response:
        buffer = ""
        for chunk in response.iter_text():
            buffer += chunk
            *blocks, buffer = buffer.split("\n\n")
            for block in blocks:
                lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
                name, data = lines.get("event"), json.loads(lines.get("data", "{}"))
                if name == "token":
                    outcome.tokens.append(data["text"])
                elif name == "session":
                    outcome.session_id = data["sessionId"]
                elif name in ("end", "terminated", "error"):
                    outcome.last_event = name
                    if name == "error":
                        outcome.error = data.get("message")


def _legacy_stream(client: httpx.Client, outcome: Outcome, model: str) -> None:
    body = {"model": model, "message": outcome.message, "conversationId": outcome.conversation_id}
    seen = ClientStream(status=0, tokens=outcome.tokens)  # the tokens are visible while the stream runs
    try:
        with client.stream("POST", "/api/stream-message", json=body) as response:
            seen.status = response.status_code
            buffer = ""
            for chunk in response.iter_text():
                buffer += chunk
                *blocks, buffer = buffer.split("\n\n")
                for block in blocks:
                    consume_block(seen, block)
                    outcome.session_id = seen.session_id
    finally:
        if seen.ended:
            outcome.last_event = "end"
        elif seen.terminated is not None:
            outcome.last_event = "terminated"
        elif seen.error is not None:
            outcome.last_event, outcome.error = "error", seen.error


def run_stream(base_url: str, outcome: Outcome, model: str) -> None:
    """One client's stream, start to finish; a broken connection is recorded, not raised."""
    try:
        with httpx.Client(base_url=base_url, timeout=httpx.Timeout(60, connect=10)) as client:
            (_typed_stream if outcome.kind == "rest" else _legacy_stream)(client, outcome, model)
    except httpx.HTTPError as exc:
        outcome.error = outcome.error or f"{type(exc).__name__}: {exc}"
    finally:
        outcome.done = True


class Streams:
    """`count` streams started together (half on each endpoint), each in a conversation of its own."""

    def __init__(self, server: ServerProcess, count: int, model: str, tag: str) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            self.outcomes = [
                Outcome(KINDS[i % 2], create_conversation(client, model), f"{tag}-{i}-{KINDS[i % 2]}")
                for i in range(count)
            ]
        self._threads = [
            threading.Thread(target=run_stream, args=(server.url, o, model), daemon=True) for o in self.outcomes
        ]

    def start(self) -> Streams:
        for thread in self._threads:
            thread.start()
        return self

    def wait_for_tokens(self, at_least: int, timeout: float = 30) -> None:
        """Until every stream has received `at_least` tokens (the fault then strikes mid-reply)."""
        wait_until(
            lambda: all(len(o.tokens) >= at_least for o in self.outcomes), timeout, what="tokens on every stream"
        )

    def join(self, timeout: float) -> list[Outcome]:
        """Wait for every client; those still running after `timeout` in all are left `done=False`."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.outcomes


def settled(read: Callable[[], Any], expected: Any, timeout: float = 10, interval: float = 0.2) -> Any:
    """`read()` once it gives `expected`, or its last value after `timeout` (records written behind the reply)."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(interval)
        value = read()
    return value


# -- what the server stored ---------------------------------------------------------------------------


def query(database_url: str, statement: str) -> list[dict[str, Any]]:
    """Rows of a read behind the service's back (SQLite file or PostgreSQL)."""
    if database_url.startswith("sqlite:///"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=30) as connection:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(statement)]

    async def fetch() -> list[dict[str, Any]]:
        import asyncpg

        connection = await asyncpg.connect(database_url, timeout=5)
        try:
            return [dict(row) for row in await connection.fetch(statement)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


def sessions(database_url: str) -> dict[str, dict[str, Any]]:
    """Every stream session row with its saved reply (if any), by session id."""
    rows = query(
        database_url,
        "SELECT s.id, s.conversation_id, s.status, s.termination_reason, s.partial_response,"
        " m.text AS reply_text, m.status AS reply_status"
        " FROM stream_sessions s LEFT JOIN messages m ON m.id = s.assistant_message_id",
    )
    return {row["id"]: row for row in rows}


def describe(outcome: Outcome, rows: dict[str, dict[str, Any]]) -> str:
    """One line on a stream for a failure message: what the client saw, what its session row holds."""
    session = rows.get(outcome.session_id or "") or {}
    return (
        f"{outcome.kind} {outcome.message}: client saw {len(outcome.tokens)} tokens, last event {outcome.last_event}"
        f" ({outcome.error}); session {session.get('status')} {session.get('termination_reason')},"
        f" {len(session.get('partial_response') or '')} chars flushed, reply {session.get('reply_status')}"
        f" of {len(session.get('reply_text') or '')} chars"
    )


def stored_messages(client: httpx.Client, conversation_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/conversations/{conversation_id}/messages")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def usage_totals(client: httpx.Client) -> dict[str, int]:
    """Requests counted in `/api/v1/usage` by day and by hour."""
    totals = {}
    for period in ("day", "hour"):
        response = client.get("/api/v1/usage", params={"period": period})
        assert response.status_code == 200, response.text
        totals[period] = response.json()["totals"]["requests"]
    return totals


def generations_total(client: httpx.Client) -> int:
    """The sum of `beth_generations_total` over all its labels in `/metrics`."""
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("beth_generations_total{") or line.startswith("beth_generations_total "):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)
