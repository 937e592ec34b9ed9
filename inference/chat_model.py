"""`ChatModel`: a loaded export (graph, tokenizer, scheduler) with the chat calls the service makes.

`stream_chat` is the async API: it renders the messages, checks the context, hands the run to the model's
worker thread and yields its events through an asyncio queue, so the event loop never waits on ONNX Runtime.
Cancellation (an event checked every step, or the consumer walking away) and the timeout end the run within
one step and still yield the final result with the partial text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from inference.events import Event, GenerationResult
from inference.execution import RuntimeOptions
from inference.export_folder import ExportInfo, read_export
from inference.lookahead import StepCosts
from inference.model import OnnxCausalLM
from inference.params import GenerationParams
from inference.prefix_cache import PrefixCache
from inference.run import CancelSignal, GenerationRun
from inference.scheduler import BatchLimits, Scheduler
from inference.tokenizer import ChatTokenizer, Message
from inference.vision import ImageEmbeds, PromptImages, expand_images, image_grids


class ChatModel:
    """One export folder ready to chat; safe to share between concurrent requests."""

    def __init__(self, model: OnnxCausalLM, tokenizer: ChatTokenizer, limits: BatchLimits | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.scheduler = Scheduler(model, limits)
        #: what this model's steps cost by tokens fed, shared by its generations' drafting
        self.step_costs = StepCosts()

    @classmethod
    def load(
        cls, path: Path | str | ExportInfo, options: RuntimeOptions | None = None, limits: BatchLimits | None = None
    ) -> ChatModel:
        """Open an export folder (blocking: seconds for large graphs; the pool calls it in a thread)."""
        info = path if isinstance(path, ExportInfo) else read_export(Path(path))
        tokenizer = ChatTokenizer(info.path)
        return cls(OnnxCausalLM(info, options), tokenizer, limits)

    @property
    def alias(self) -> str:
        return self.model.info.alias

    @property
    def info(self) -> ExportInfo:
        return self.model.info

    @property
    def context_length(self) -> int:
        return self.model.context_length

    @property
    def provider(self) -> str:
        return self.model.provider

    @property
    def running(self) -> int:
        """Generations in this model's batch now."""
        return self.scheduler.running

    @property
    def queued(self) -> int:
        """Requests waiting for a place in the batch."""
        return self.scheduler.queued

    @property
    def saved_bytes(self) -> int:
        """Bytes of saved prefixes (counted in the pool's memory budget)."""
        return self.scheduler.prefixes.nbytes

    def drop_saved(self) -> int:
        """Forget every saved prefix (room for another model); return the bytes freed."""
        return self.scheduler.prefixes.trim(0)

    @property
    def on_admitted(self) -> Callable[[float], None] | None:
        """Called (on the worker thread) with each admitted request's seconds in the queue."""
        return self.scheduler.on_admitted

    @on_admitted.setter
    def on_admitted(self, callback: Callable[[float], None] | None) -> None:
        self.scheduler.on_admitted = callback

    @property
    def sees_images(self) -> bool:
        """Whether this export has a vision encoder (messages may then carry `images`)."""
        return self.model.vision is not None

    def count_chat_tokens(self, messages: Sequence[Message]) -> int:
        """Prompt tokens these messages take, generation prompt included (for trimming history)."""
        return len(self._prompt(messages, {}).token_ids)

    def _prompt(self, messages: Sequence[Message], template_args: Any) -> PromptImages:
        """The rendered prompt's ids, each image of a message (`images`: raw bytes) expanded to its tokens."""
        vision = self.model.info.vision
        ids = self.tokenizer.encode_chat(self._template_messages(messages), **template_args)
        images = [data for m in messages for data in (m.get("images") or ())]
        if vision is None or not images:
            return PromptImages(ids, [])
        return expand_images(ids, vision, image_grids(images, vision))

    def _template_messages(self, messages: Sequence[Message]) -> list[Message]:
        """The messages as the chat template reads them: a vision export's template reads content parts
        (SmolVLM's renders nothing of a plain string), so every message is given as parts there."""
        if self.model.info.vision is None:
            return [{k: v for k, v in m.items() if k != "images"} for m in messages]
        return [_as_parts(m) for m in messages]

    def start_chat(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        cancel: CancelSignal | None = None,
        timeout_s: float | None = None,
        **template_args: Any,
    ) -> GenerationRun:
        """A run for these messages; raises CONTEXT_LENGTH_EXCEEDED before any work if it cannot fit.

        A message's `images` (raw bytes; vision exports only) are checked against the context first, then
        encoded once each, here in the caller's thread.
        """
        images = [data for m in messages for data in (m.get("images") or ())]
        prompt = self._prompt(messages, template_args)
        prompt_ids = prompt.token_ids
        run = self.start(prompt_ids, params, cancel, timeout_s)
        if images:
            assert self.model.vision is not None
            run.generator.images = ImageEmbeds(prompt.starts, self.model.vision.encode(images))
        else:
            run.shared_prefix = self._system_prefix(messages, prompt_ids, template_args)
        return run

    def start(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        cancel: CancelSignal | None = None,
        timeout_s: float | None = None,
    ) -> GenerationRun:
        """A run continuing raw prompt ids (no chat template)."""
        return GenerationRun(self.model, self.tokenizer, prompt_ids, params, cancel, timeout_s, self.step_costs)

    def _system_prefix(self, messages: Sequence[Message], prompt_ids: Sequence[int], template_args: Any) -> int:
        """How many leading prompt tokens are the system prompt's (shared by the conversations that use it)."""
        if len(messages) < 2 or messages[0].get("role") != "system":
            return 0
        system = self.tokenizer.encode_chat(
            self._template_messages(messages[:1]), add_generation_prompt=False, **template_args
        )
        fits = 0 < len(system) < len(prompt_ids) and list(prompt_ids[: len(system)]) == list(system)
        return len(system) if fits else 0

    @property
    def prefix_cache(self) -> PrefixCache:
        """The saved prefixes of this model (earlier turns, system prompts)."""
        return self.scheduler.prefixes

    def generate_chat(self, messages: Sequence[Message], params: GenerationParams) -> GenerationResult:
        """Blocking, in the caller's thread: the whole reply (tests, benchmarks, export validation)."""
        return _last(self.start_chat(messages, params).events())

    def generate(self, prompt_ids: Sequence[int], params: GenerationParams) -> GenerationResult:
        """Blocking, in the caller's thread: continue raw prompt ids."""
        return _last(self.start(prompt_ids, params).events())

    async def stream_chat(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        cancel: CancelSignal | None = None,
        timeout_s: float | None = None,
        **template_args: Any,
    ) -> AsyncIterator[Event]:
        """Text deltas, then one `GenerationResult`; the work runs on the model's worker thread."""
        if any(m.get("images") for m in messages):  # encoding images takes a while: not on the event loop
            run = await asyncio.to_thread(self.start_chat, messages, params, cancel, timeout_s, **template_args)
        else:
            run = self.start_chat(messages, params, cancel, timeout_s, **template_args)
        # closed explicitly, so a consumer that leaves cancels the run now, not when the relay is collected
        async with contextlib.aclosing(self.stream_run(run, cancel)) as events:
            async for event in events:
                yield event

    async def stream_run(self, run: GenerationRun, cancel: CancelSignal | None = None) -> AsyncIterator[Event]:
        """Schedule `run` and relay its events into the event loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[Event] | BaseException] = asyncio.Queue()
        self.scheduler.submit(run, _deliver(loop, queue))  # raises HF_OVERLOADED when the queue is full
        watchers = _watch(run, cancel, loop)
        try:
            # `run.done` turns true in the worker thread before its last batch reaches the queue, so the
            # relay ends on the result it passed on, never on the run's state.
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                for event in item:
                    yield event
                    if isinstance(event, GenerationResult):
                        return
        finally:
            if not run.done:
                run.cancel()  # the consumer left early: free the worker and the cache
            for watcher in watchers:
                watcher.cancel()

    def set_limits(self, limits: BatchLimits) -> None:
        """New batch and queue limits, for the requests admitted from now on."""
        self.scheduler.limits = limits

    def close(self) -> None:
        """Cancel running generations and release the session."""
        self.scheduler.close()
        self.model.close()


def _as_parts(message: Message) -> Message:
    """A message as the content parts a vision chat template reads: its images, then its text."""
    rest = {k: v for k, v in message.items() if k != "images"}
    parts: list[dict[str, str]] = [{"type": "image"} for _ in message.get("images") or ()]
    parts.append({"type": "text", "text": str(message.get("content") or "")})
    return {**rest, "content": parts}


def _watch(run: GenerationRun, cancel: CancelSignal | None, loop: asyncio.AbstractEventLoop) -> list[Any]:
    """Interrupt a long step (prefill) at once when the cancel event fires or the deadline passes."""
    watchers: list[Any] = []
    if isinstance(cancel, asyncio.Event):

        async def on_cancel() -> None:
            await cancel.wait()
            run.cancel()

        watchers.append(loop.create_task(on_cancel()))
    if run.deadline is not None:
        delay = max(0.0, run.deadline - run.started_at)
        watchers.append(loop.call_later(delay, run.expire))
    return watchers


def _last(events: Iterator[Event]) -> GenerationResult:
    result = None
    for event in events:
        result = event
    if not isinstance(result, GenerationResult):
        raise RuntimeError("a generation ended without a result")
    return result


def _deliver(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> Any:
    """A sink for the worker thread; a loop that closed meanwhile (consumer gone) is not an error."""

    def sink(item: Any) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, item)

    return sink
