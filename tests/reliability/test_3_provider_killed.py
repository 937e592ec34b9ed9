"""The provider killed mid-stream: every client hears how its reply ended, nothing hangs, nothing is lost.

Ollama is stopped (listener closed, every connection dropped) while 10 replies stream. Each client gets
an `error` event (or `end`) that does not show Ollama's address, the user messages stay stored, the
health endpoints stop calling Ollama healthy, and once Ollama is back new streams work again.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.fixtures.polling import wait_until
from tests.fixtures.server import fresh_database
from tests.reliability.clients import Streams, describe, sessions, settled, stored_messages
from tests.reliability.paced_ollama import PACED, PacedOllama, paced_reply
from tests.reliability.report import Row
from tests.reliability.servers import serving

pytestmark = pytest.mark.reliability

STREAMS = 10


def ollama_health(client: httpx.Client) -> dict[str, str]:
    """Ollama's health as `/health/ready` and `/api/v1/providers` report it."""
    ready = client.get("/health/ready")
    listing = client.get("/api/v1/providers")
    assert ready.status_code == listing.status_code == 200, (ready.text, listing.text)
    provider = next(p for p in listing.json()["providers"] if p["name"] == "ollama")
    return {
        "/health/ready": ready.json()["providers"]["ollama"]["status"],
        "/api/v1/providers": provider["health"]["status"],
    }


def unhealthy(health: dict[str, str]) -> bool:
    return "healthy" not in health.values()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_provider_killed_mid_stream(kind: str, tmp_path: Path, paced_ollama: PacedOllama, row: Row) -> None:
    paced_ollama.words, paced_ollama.pace_s = 200, 0.1  # 20 s a reply: the provider dies mid-reply
    # A short circuit cooldown, so the provider is tried again soon after it comes back; no periodic health
    # check during the test, so only the failures themselves can mark Ollama unhealthy.
    with (
        fresh_database(kind, tmp_path) as url,
        serving(url, tmp_path, paced_ollama, CIRCUIT_COOLDOWN_S="1", HEALTH_CHECK_INTERVAL_S="300") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert set(ollama_health(client).values()) == {"healthy"}
        streams = Streams(server, STREAMS, PACED.name, "provider").start()
        streams.wait_for_tokens(3)
        paced_ollama.stop()
        outcomes = streams.join(timeout=30)
        row.streams = len(outcomes)
        row.errors = sum(1 for o in outcomes if o.last_event != "end")
        rows = sessions(url)
        stored = {o.conversation_id: stored_messages(client, o.conversation_id) for o in outcomes}
        row.saved_exact = sum(
            1 for o in outcomes if (rows.get(o.session_id or "") or {}).get("reply_text") == o.text and o.text
        )
        # a failure marks the provider unhealthy at once, not at the next periodic check
        settled(lambda: unhealthy(ollama_health(client)), True, timeout=3)
        health_after_kill = ollama_health(client)
        row.notes.append(f"Ollama's health 3 s after the streams failed: {health_after_kill}")
        row.notes.append(f"the clients' errors: {sorted({o.error or '' for o in outcomes if o.last_event != 'end'})}")

        paced_ollama.words, paced_ollama.pace_s = 8, 0.0
        paced_ollama.start()
        # the circuit opened on the failures; a probe stream gets through once its cooldown has passed
        wait_until(
            lambda: Streams(server, 1, PACED.name, "probe").start().join(timeout=30)[0].last_event == "end",
            45,
            what="a stream to succeed after the provider came back",
            interval=0.5,
        )
        after = Streams(server, 6, PACED.name, "after-provider").start().join(timeout=60)
        row.notes.append(f"{sum(1 for o in after if o.last_event == 'end')}/{len(after)} streams ended afterwards")

        assert all(o.done for o in outcomes), "a client hung after the provider died"
        assert [describe(o, rows) for o in outcomes if o.last_event not in ("error", "end")] == []
        assert all(stored[o.conversation_id][0]["text"] == o.message for o in outcomes), "a user message was lost"
        assert not [describe(o, rows) for o in outcomes if rows[o.session_id or ""]["status"] == "ACTIVE"]
        assert unhealthy(health_after_kill), (
            f"Ollama still reported healthy after its streams failed: {health_after_kill}"
        )
        address = paced_ollama.url.removeprefix("http://")
        assert [o.error for o in outcomes if address in (o.error or "")] == [], "the provider's address reached clients"
        assert [(o.message, o.last_event, o.error) for o in after if o.last_event != "end"] == []
        assert all(o.text == "".join(paced_reply(o.message, 8)) for o in after)
