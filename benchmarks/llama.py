"""llama.cpp (llama-cpp-python) on the GGUF file the default model is exported from, as a reference runner.

Optional: used only where `llama_cpp` is importable, never installed by the project. It gets the service's
own system prompt, history and reply limit, greedy without a repetition penalty, and keeps its context
between calls, so it reuses the longest common prefix of consecutive prompts (the system prompt, and a
conversation's earlier turns) as llama.cpp always does. Its binding runs one sequence, so it has no
concurrency figures. Token counts are the streamed chunks (one per token, except where a token ends inside
a UTF-8 character). Every call runs on one thread of its own: llama.cpp's OpenMP build keeps a team of worker
threads per calling thread, and an idle team that spins beside the working one takes its cores.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import itertools
import time
from pathlib import Path
from typing import Any

from benchmarks.service import Reply


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class LlamaRunner:
    concurrent = False

    def __init__(self, gguf: Path, threads: int, system_prompt: str, max_tokens: int) -> None:
        from llama_cpp import Llama

        self.name = "llama.cpp"
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.model = Llama(model_path=str(gguf), n_ctx=8192, n_threads=threads, n_threads_batch=threads, verbose=False)
        self.histories: dict[str, list[dict[str, str]]] = {}
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._ids = itertools.count(1)

    async def new_conversation(self) -> str:
        conversation_id = str(next(self._ids))
        self.histories[conversation_id] = [{"role": "system", "content": self.system_prompt}]
        return conversation_id

    async def turn(self, conversation_id: str, text: str, first_token_only: bool = False) -> Reply:
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._turn, conversation_id, text, first_token_only
        )

    def _turn(self, conversation_id: str, text: str, first_token_only: bool) -> Reply:
        history = self.histories[conversation_id]
        messages = [*history, {"role": "user", "content": text}]
        reply = Reply(started=time.perf_counter())
        pieces: list[str] = []
        chunks: Any = self.model.create_chat_completion(
            messages=messages, temperature=0.0, repeat_penalty=1.0, max_tokens=self.max_tokens, stream=True
        )
        for chunk in chunks:
            content = chunk["choices"][0]["delta"].get("content")
            if not content:
                continue
            now = time.perf_counter()
            reply.first_token = reply.first_token or now
            reply.last_token = now
            pieces.append(content)
            if first_token_only:
                break
        reply.ended = time.perf_counter()
        reply.completion_tokens = len(pieces)
        if not first_token_only:
            history += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces)}]
        return reply
