"""The test Ollama with one more model for the reliability suite: `paced:latest`.

Its reply is derived from the user's message (so every stream's reply differs and a test knows the exact
text to expect), carries multi-byte characters, and comes `words` chunks long, `pace_s` apart: fast for
the load runs, slow enough for the fault runs to strike while tokens flow.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from tests.fixtures.ollama import MODELS, FakeModel, FakeOllama, _chunk, _end, _json, _part, _show, _start_stream, _tag

PACED = FakeModel("paced:latest", "llama", "1B", 8192, ["completion"])
MODEL = f"ollama/{PACED.name}"


def paced_reply(message: str, words: int) -> list[str]:
    """The chunks `paced:latest` answers `message` with."""
    return [f"{i}·{message}·é日🎲 " for i in range(words)]


@dataclass
class PacedOllama(FakeOllama):
    words: int = 8
    pace_s: float = 0.0

    async def _route(
        self, method: str, path: str, body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        name = body.get("model") or body.get("name")
        if path == "/api/tags" and method == "GET":
            return await _json(writer, 200, {"models": [_tag(m) for m in (*MODELS.values(), PACED)]})
        if path == "/api/show" and method == "POST" and name == PACED.name:
            return await _json(writer, 200, _show(PACED))
        if (
            path == "/api/chat"
            and method == "POST"
            and name == PACED.name
            and body.get("messages")
            and self.mode == "ok"
        ):
            return await self._paced(body, reader, writer)
        return await super()._route(method, path, body, reader, writer)

    async def _paced(self, body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        message = next((m["content"] for m in reversed(body["messages"]) if m.get("role") == "user"), "")
        words = paced_reply(message, self.words)
        await _start_stream(writer)
        try:
            for word in words:
                if reader.at_eof():  # the client went away: stop, as Ollama does
                    raise ConnectionResetError
                await _chunk(writer, _part(PACED.name, word))
                if self.pace_s:
                    await asyncio.sleep(self.pace_s)
        except ConnectionError:
            self.disconnects.append(PACED.name)
            return False
        final = {
            **_part(PACED.name, ""),
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": 10,
            "prompt_eval_duration": 1_000_000,
            "eval_count": len(words),
            "eval_duration": 1_000_000_000,
        }
        await _chunk(writer, final)
        await _end(writer)
        return True
