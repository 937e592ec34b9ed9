"""kill -9 of the server mid-stream, then a restart on the same database: nothing the clients sent is lost.

The interrupted sessions are closed as SERVER_SHUTDOWN by the restarted process, each with the partial
text it had flushed saved as a `partial` reply; new streams work at once.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fixtures.polling import wait_until
from tests.fixtures.server import fresh_database
from tests.reliability.clients import Outcome, Streams, describe, query, sessions, stored_messages
from tests.reliability.paced_ollama import PACED, PacedOllama, paced_reply
from tests.reliability.report import Row
from tests.reliability.servers import serving

pytestmark = pytest.mark.reliability

STREAMS = 10
WORDS = 200


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_kill_9_mid_stream_then_restart(kind: str, tmp_path: Path, paced_ollama: PacedOllama, row: Row) -> None:
    paced_ollama.words, paced_ollama.pace_s = WORDS, 0.1  # 20 s a reply: the kill lands mid-reply
    with fresh_database(kind, tmp_path) as url, serving(url, tmp_path, paced_ollama) as server:
        streams = Streams(server, STREAMS, PACED.name, "killed").start()
        streams.wait_for_tokens(3)
        # every session has flushed some partial text before the kill
        wait_until(
            lambda: len(query(url, "SELECT id FROM stream_sessions WHERE partial_response <> ''")) == STREAMS,
            10,
            what="a flushed partial text on every session",
        )
        server.kill()
        interrupted = streams.join(timeout=15)
        row.streams = len(interrupted)
        row.errors = sum(1 for o in interrupted if o.last_event != "end")

        paced_ollama.words, paced_ollama.pace_s = 8, 0.0
        server.restart()
        wait_until(
            lambda: not query(url, "SELECT id FROM stream_sessions WHERE status = 'ACTIVE'"),
            20,
            what="the interrupted sessions to be closed",
        )
        rows = sessions(url)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            stored = {o.conversation_id: stored_messages(client, o.conversation_id) for o in interrupted}
        after = Streams(server, 6, PACED.name, "after-restart").start().join(timeout=60)

        def recovered(outcome: Outcome) -> bool:
            session = rows.get(outcome.session_id or "")
            if session is None:
                return False
            saved = session["reply_text"] or ""
            expected = "".join(paced_reply(outcome.message, WORDS))
            return (
                session["status"] == "TERMINATED"
                and session["termination_reason"] == "SERVER_SHUTDOWN"
                and session["reply_status"] == "partial"
                and saved == session["partial_response"]
                and saved != ""
                and expected.startswith(saved)
                and expected.startswith(outcome.text)
                and [m["text"] for m in stored[outcome.conversation_id]] == [outcome.message, saved]
            )

        row.saved_exact = sum(1 for o in interrupted if recovered(o))
        row.notes.append(
            f"{row.saved_exact}/{STREAMS} interrupted sessions closed SERVER_SHUTDOWN with their partial text; "
            f"{sum(1 for o in after if o.last_event == 'end')}/{len(after)} streams after the restart ended"
        )

        assert all(o.done for o in interrupted), "a client hung after the kill"
        assert all(o.session_id for o in interrupted)
        assert all(stored[o.conversation_id][0]["text"] == o.message for o in interrupted), "a user message was lost"
        assert row.saved_exact == STREAMS, [describe(o, rows) for o in interrupted if not recovered(o)]
        assert [(o.message, o.last_event, o.error) for o in after if o.last_event != "end"] == []
        assert all(o.text == "".join(paced_reply(o.message, 8)) for o in after)
