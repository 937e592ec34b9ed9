"""`GenerationRun`: one request from prompt ids to text events, one model step per `step()`.

It wraps a `Generator` with what a request adds on top of tokens: streaming detokenization, stop strings,
cancellation, a deadline, and usage figures. The synchronous loop (tests, benchmarks) drives `step()`; the
scheduler thread (the async API) drives the same pieces (`interrupted`, the generator's steps, `emit`,
`failed`), batching the decoding runs of a model into one step, so both behave the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

from inference.errors import HF_CANCELLED, InferenceError
from inference.events import Event, GenerationResult, TextDelta, Usage
from inference.generator import FinishReason, Generator
from inference.lookahead import StepCosts
from inference.model import OnnxCausalLM
from inference.params import GenerationParams
from inference.stop_strings import StopStringFilter
from inference.tokenizer import ChatTokenizer

PREFILL_CHUNK = 256  # prompt tokens per step: long prompts do not stall other requests for seconds


class CancelSignal(Protocol):
    """Anything with `is_set()`: an `asyncio.Event`, a `threading.Event`, ..."""

    def is_set(self) -> bool: ...


class GenerationRun:
    """Drive one generation; `step()` returns the events that step produced, the last one a result."""

    def __init__(
        self,
        model: OnnxCausalLM,
        tokenizer: ChatTokenizer,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        cancel: CancelSignal | None = None,
        timeout_s: float | None = None,
        step_costs: StepCosts | None = None,
        shared_prefix: int = 0,
    ) -> None:
        self.started_at = time.perf_counter()
        self.generator = Generator(model, params, step_costs)
        self.generator.append_tokens(prompt_ids)
        self.tokenizer = tokenizer
        self._text_stream = tokenizer.stream()
        self._stops = StopStringFilter(params.stop_strings)
        self._parts: list[str] = []
        self._cancel = cancel
        self._cancelled = threading.Event()
        self.deadline = None if timeout_s is None else self.started_at + timeout_s
        self.result: GenerationResult | None = None
        #: leading prompt tokens other conversations share (the system prompt's): their cache is worth saving
        self.shared_prefix = shared_prefix

    @property
    def done(self) -> bool:
        return self.result is not None

    def cancel(self) -> None:
        """Stop at the next step boundary, or sooner if the model is mid-step (thread-safe)."""
        self._cancelled.set()
        self.generator.interrupt()

    def expire(self) -> None:
        """The deadline passed: stop like `cancel`, but report `timeout`."""
        self.deadline = time.perf_counter()
        self.generator.interrupt()

    def step(self) -> list[Event]:
        """Advance by one model step (a token, or several when drafts were kept) or finish; never call once `done`."""
        stopped = self.interrupted()
        if stopped is not None:
            return stopped
        generator = self.generator
        try:
            if generator.prefill_step(PREFILL_CHUNK):
                return []
            tokens = generator.generate_next_tokens()
        except InferenceError as exc:
            return self.failed(exc)
        return self.emit(tokens)

    def interrupted(self) -> list[Event] | None:
        """The final events when the run was cancelled or ran out of time (its cache freed), else None."""
        reason = self._interruption()
        if reason is None:
            return None
        self.generator.finish(reason)
        return self._finish()

    def failed(self, exc: InferenceError) -> list[Event]:
        """A step raised: an interrupted step ends the run like `interrupted`; anything else is re-raised."""
        if exc.code != HF_CANCELLED:
            self.generator.close()
            raise exc
        self.generator.finish(self._interruption() or "cancelled")
        return self._finish()

    def emit(self, tokens: list[int]) -> list[Event]:
        """The events for the tokens a step picked: text (short of any stop string), then the result if done."""
        generator = self.generator
        events: list[Event] = []
        pieces = []
        for index, token in enumerate(tokens):
            if token in generator.stop_token_ids:
                break
            pieces.append(self._stops.push(self._text_stream.push(token)))
            if self._stops.stopped:
                generator.finish("stop", unused_tokens=len(tokens) - index - 1)
                break
        text = "".join(pieces)
        if text:  # one delta per step, however many tokens it kept
            self._parts.append(text)
            events.append(TextDelta(text))
        if generator.is_done():
            events.extend(self._finish())
        return events

    def events(self) -> Iterator[Event]:
        """The synchronous loop: every event until the result."""
        while not self.done:
            yield from self.step()

    def _interruption(self) -> FinishReason | None:
        if self._cancelled.is_set() or (self._cancel is not None and self._cancel.is_set()):
            return "cancelled"
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return "timeout"
        return None

    def _finish(self) -> list[Event]:
        events: list[Event] = []
        tail = self._stops.flush()
        if tail:
            self._parts.append(tail)
            events.append(TextDelta(tail))
        generator = self.generator
        self.result = GenerationResult(
            text="".join(self._parts),
            finish_reason=generator.finish_reason or "stop",
            usage=self._usage(),
            token_ids=list(generator.generated),
        )
        events.append(self.result)
        return events

    def _usage(self) -> Usage:
        generator = self.generator
        end = generator.finished_at or time.perf_counter()
        first = generator.first_token_at
        decoded = len(generator.generated) - 1
        rate = decoded / (end - first) if first is not None and decoded > 0 and end > first else None
        return Usage(
            prompt_tokens=generator.prompt_length,
            completion_tokens=len(generator.generated),
            time_to_first_token_s=None if first is None else first - self.started_at,
            decode_tokens_per_s=rate,
            duration_s=end - self.started_at,
        )
