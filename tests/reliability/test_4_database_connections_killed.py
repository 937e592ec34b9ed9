"""PostgreSQL connections killed again and again while replies stream: every reply still ends and is saved.

`pg_terminate_backend` ends every backend of the test database 20 times, 0.3 s apart, while 10 slow
replies stream (each flushing its partial text several times a second). Every stream must end with
`end`, its whole reply stored byte-exact, no session left ACTIVE, and every generation counted once.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import POSTGRES_ADMIN_URL, fresh_database
from tests.reliability.clients import (
    Streams,
    describe,
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

STREAMS = 10
WORDS = 60
KILLS = 20
KILL_EVERY_S = 0.3


def kill_backends(database_name: str, times: int, every_s: float, killed: list[int]) -> None:
    """Terminate every backend of `database_name` `times` times (from the admin database, never killed)."""

    async def run() -> None:
        import asyncpg

        connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            for _ in range(times):
                count = await connection.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database_name,
                )
                killed.append(int(count or 0))
                await asyncio.sleep(every_s)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.mark.parametrize("kind", ["postgres"])
def test_database_connections_killed_mid_stream(kind: str, tmp_path: Path, paced_ollama: PacedOllama, row: Row) -> None:
    paced_ollama.words, paced_ollama.pace_s = WORDS, 0.15  # 9 s a reply: the kills (6 s) land mid-reply
    with fresh_database(kind, tmp_path) as url, serving(url, tmp_path, paced_ollama) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            before = generations_total(client)
        streams = Streams(server, STREAMS, PACED.name, "pgkill").start()
        streams.wait_for_tokens(2)
        killed: list[int] = []
        killer = threading.Thread(target=kill_backends, args=(url.rsplit("/", 1)[1], KILLS, KILL_EVERY_S, killed))
        killer.start()
        outcomes = streams.join(timeout=60)
        killer.join(30)
        row.streams = len(outcomes)
        row.errors = sum(1 for o in outcomes if o.last_event != "end")
        row.notes.append(f"{len(killed)} rounds of pg_terminate_backend ended {sum(killed)} backends")

        rows = sessions(url)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            stored = {o.conversation_id: stored_messages(client, o.conversation_id) for o in outcomes}
            usage = settled(lambda: usage_totals(client), {"day": STREAMS, "hour": STREAMS})
            generations = generations_total(client) - before
        row.saved_exact = sum(
            1
            for o in outcomes
            if [m["text"].encode() for m in stored[o.conversation_id]] == [o.message.encode(), o.text.encode()]
            and (rows.get(o.session_id or "", {}).get("reply_text") or "").encode() == o.text.encode()
        )
        row.usage_counted = min(usage["day"], usage["hour"])
        row.notes.append(f"usage day={usage['day']} hour={usage['hour']}, beth_generations_total delta={generations}")
        row.notes.append(f"the clients' errors: {sorted({o.error or '' for o in outcomes if o.last_event != 'end'})}")
        row.notes.append(f"session rows: {sorted(r['status'] for r in rows.values())}")

        assert all(o.done for o in outcomes), "a client hung"
        assert sum(killed) > 0, "no backend was killed: the scenario did not happen"
        assert [describe(o, rows) for o in outcomes if o.last_event != "end"] == []
        assert all(o.text == "".join(paced_reply(o.message, WORDS)) for o in outcomes)
        assert row.saved_exact == STREAMS
        assert [describe(o, rows) for o in outcomes if rows[o.session_id or ""]["status"] == "ACTIVE"] == []
        assert usage == {"day": STREAMS, "hour": STREAMS}
        assert generations == STREAMS
