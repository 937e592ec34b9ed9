"""The service under measurement: `beth-chat serve` in a subprocess, and a client that times its typed streams.

The server is the tests' `ServerProcess` (its own data folder and SQLite database, loopback only), pointed at
the benchmark's models folder, with Ollama off and a config file that makes every hf model greedy with a
fixed reply limit, so that runs are repeatable. Everything is measured as a client sees it: a turn is
`POST /api/v1/conversations/{id}/messages` with `"stream": true`; time to first token runs from sending the
request to the first `token` event; token counts come from the `end` event's usage.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.fixtures.server import ServerProcess

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass
class Reply:
    """One streamed turn as the client saw it; times are `time.perf_counter()` seconds."""

    started: float
    first_token: float | None = None
    last_token: float | None = None
    ended: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    error: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    @property
    def decode_tps(self) -> float | None:
        """Tokens per second after the first one, between the first and the last token event."""
        if self.first_token is None or self.last_token is None or self.completion_tokens < 2:
            return None
        elapsed = self.last_token - self.first_token
        return (self.completion_tokens - 1) / elapsed if elapsed > 0 else None


@contextmanager
def running_service(
    workdir: Path,
    models: Path,
    max_tokens: int,
    extra_env: dict[str, str] | None = None,
    greedy: bool = True,
    repetition_penalty: float | None = None,
) -> Iterator[ServerProcess]:
    """Serve the exports in `models` (`max_tokens` per reply; greedy, or with `greedy=False` the service's own
    sampling defaults; `repetition_penalty` instead of the service's default) until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "beth.toml"
    options = "temperature = 0\n" if greedy else ""
    if repetition_penalty is not None:
        options += f"repetition_penalty = {repetition_penalty}\n"
    tables = [
        f'[models."hf/{folder.name}".options]\n{options}max_tokens = {max_tokens}\n'
        for folder in sorted(models.iterdir())
        if (folder / "manifest.json").is_file()
    ]
    config.write_text("\n".join(tables))
    env = {
        # the service runs this checkout's code, like the benchmark, whatever the virtualenv has installed
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])),
        "BETH_CONFIG": str(config),
        "HF_MODELS_DIR": str(models),
        "OLLAMA_ENABLED": "false",
        "LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    server = ServerProcess(workdir, f"sqlite:///{workdir / 'beth.sqlite3'}", env)
    server.start(timeout=120)
    try:
        yield server
    finally:
        server.stop()


class ServiceClient:
    """Conversations and timed turns against one running service."""

    concurrent = True

    def __init__(self, base_url: str, model: str) -> None:
        self.model = model
        self.name = model
        self.http = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(600, connect=10))

    async def close(self) -> None:
        await self.http.aclose()

    async def new_conversation(self) -> str:
        conversation_id = uuid.uuid4().hex
        response = await self.http.post(
            "/api/v1/conversations", json={"id": conversation_id, "tabName": "benchmark", "llmModel": self.model}
        )
        response.raise_for_status()
        return conversation_id

    async def turn(self, conversation_id: str, text: str, first_token_only: bool = False) -> Reply:
        """Send `text` and read the reply's events; with `first_token_only`, stop the reply at its first token."""
        reply = Reply(started=time.perf_counter())
        session_id = None
        body = {"text": text, "stream": True}
        async with self.http.stream("POST", f"/api/v1/conversations/{conversation_id}/messages", json=body) as stream:
            if stream.status_code != 200:
                await stream.aread()
                reply.error = f"HTTP {stream.status_code}: {stream.text[:200]}"
                return reply
            name = None
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                    continue
                if not line.startswith("data: "):
                    continue
                now = time.perf_counter()
                payload = json.loads(line[len("data: ") :])
                if name == "session":
                    session_id = payload["sessionId"]
                elif name == "token":
                    if reply.first_token is None:
                        reply.first_token = now
                        if first_token_only and session_id is not None:
                            await self._terminate(session_id, conversation_id)
                    reply.last_token = now
                elif name == "end":
                    usage = payload.get("usage") or {}
                    reply.prompt_tokens = usage.get("promptTokens")
                    reply.completion_tokens = usage.get("completionTokens") or 0
                elif name == "terminated":
                    reply.completion_tokens = payload.get("tokenCount") or 0
                elif name == "error":
                    reply.error = f"{payload.get('code')}: {payload.get('message')}"
        reply.ended = time.perf_counter()
        return reply

    async def _terminate(self, session_id: str, conversation_id: str) -> None:
        # the reply may have ended on its own meanwhile; either way the stream ends and is drained by the caller
        await self.http.post("/api/terminate-stream", json={"sessionId": session_id, "conversationId": conversation_id})
