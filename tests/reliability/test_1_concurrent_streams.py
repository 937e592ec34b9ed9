"""50 streams at once on each database: every reply stored exactly as sent, every generation counted once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import fresh_database
from tests.reliability.clients import (
    Streams,
    generations_total,
    sessions,
    settled,
    stored_messages,
    usage_totals,
)
from tests.reliability.paced_ollama import PACED, PacedOllama, paced_reply
from tests.reliability.report import Row
from tests.reliability.servers import serving

pytestmark = pytest.mark.reliability

STREAMS = 50
WORDS = 12


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_50_concurrent_streams(kind: str, tmp_path: Path, paced_ollama: PacedOllama, row: Row) -> None:
    paced_ollama.words, paced_ollama.pace_s = WORDS, 0.01
    with (
        fresh_database(kind, tmp_path) as url,
        serving(url, tmp_path, paced_ollama) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        before = generations_total(client)
        streams = Streams(server, STREAMS, PACED.name, "load").start()
        outcomes = streams.join(timeout=120)
        row.streams = len(outcomes)
        row.errors = sum(1 for o in outcomes if o.last_event != "end")

        stored = {o.conversation_id: stored_messages(client, o.conversation_id) for o in outcomes}
        rows = sessions(url)
        row.saved_exact = sum(
            1
            for o in outcomes
            if [m["text"].encode() for m in stored[o.conversation_id]] == [o.message.encode(), o.text.encode()]
            and (rows.get(o.session_id or "", {}).get("reply_text") or "").encode() == o.text.encode()
        )
        usage = settled(lambda: usage_totals(client), {"day": STREAMS, "hour": STREAMS})
        generations = generations_total(client) - before
        row.usage_counted = min(usage["day"], usage["hour"])
        row.notes.append(f"usage day={usage['day']} hour={usage['hour']}, beth_generations_total delta={generations}")
        locked = server.logs().count("database is locked")
        if locked:
            row.notes.append(f"'database is locked' in the server log {locked} times")

        assert all(o.done for o in outcomes), "a client hung"
        assert [(o.message, o.last_event, o.error) for o in outcomes if o.last_event != "end"] == []
        assert all(o.text == "".join(paced_reply(o.message, WORDS)) for o in outcomes)
        assert row.saved_exact == STREAMS
        assert not [r for r in rows.values() if r["status"] != "COMPLETED"]
        assert usage == {"day": STREAMS, "hour": STREAMS}
        assert generations == STREAMS
