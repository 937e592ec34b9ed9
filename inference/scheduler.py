"""`Scheduler`: one worker thread per loaded model that runs every active generation, a round at a time.

A round is one batched step over every decoding generation (each one token, each at its own length, in its
own row of the model's `SlotCache`), plus at most one step for a generation still feeding its prompt (a
piece of at most `PREFILL_CHUNK` tokens), so a new request never stalls the running streams longer than one
piece. Generations join and leave between rounds: a new one takes the next free row; one that ends hands
its row to the last one (one cache copied, never all). A generation that decodes alone steps alone, with the
drafted tokens its policy allows (a batched step checks none: batching pays more than drafting there).
Graphs without slots (no GroupQueryAttention) step one generation at a time, in turns.

At most `max_batch_size` generations run at once; more wait in a FIFO of `queue_length` for up to
`queue_wait_s`, and only a full queue or a wait that runs out refuses a request (HF_OVERLOADED). One thread
per model also means one ONNX Runtime call at a time, which is what the CPU wants with intra-op threads on
every core.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from inference.errors import HF_OVERLOADED, InferenceError
from inference.events import Event
from inference.kv_slots import SlotCache
from inference.model import OnnxCausalLM, SequenceState
from inference.prefix_cache import MIN_TOKENS, PrefixCache, common_length
from inference.run import PREFILL_CHUNK, GenerationRun

log = logging.getLogger(__name__)

Sink = Callable[[list[Event] | BaseException], None]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How many generations of one model run at once, how many may wait and for how long, and how many bytes
    of saved prefixes (inference/prefix_cache.py) the model keeps."""

    max_batch_size: int = 8
    queue_length: int = 16
    queue_wait_s: float = 30.0
    prefix_cache_bytes: int = 512 * 2**20


@dataclass(slots=True)
class _Active:
    run: GenerationRun
    sink: Sink
    submitted_at: float = field(default_factory=time.monotonic)
    state: SequenceState | None = None  # its row, kept after the generator lets go of it (to save the prefix)


class Scheduler:
    """Owns the worker thread; `submit` hands it a run and a sink for that run's events."""

    def __init__(self, model: OnnxCausalLM, limits: BatchLimits | None = None) -> None:
        self.model = model
        self.name = model.info.alias
        self._limits = limits or BatchLimits()
        #: the key-value prefixes of finished turns and of system prompts, for the next generations
        self.prefixes = PrefixCache(self._limits.prefix_cache_bytes)
        #: called with the seconds each admitted run waited in the queue (0 when it started at once),
        #: on the worker thread
        self.on_admitted: Callable[[float], None] | None = None
        self._rows: list[_Active] = []  # the running generations; with slots, index = cache row
        self._queue: deque[_Active] = deque()
        self._slots: SlotCache | None = None
        #: the tokens whose cache still fills a free row, and that row: the last generation to leave from the
        #: last row; the next generation starts in that row, so its conversation's next turn copies nothing
        self._resident: tuple[np.ndarray, int] | None = None
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    @limits.setter
    def limits(self, limits: BatchLimits) -> None:
        self._limits = limits
        self.prefixes.budget_bytes = limits.prefix_cache_bytes
        self.prefixes.trim(limits.prefix_cache_bytes)

    @property
    def running(self) -> int:
        with self._wake:
            return len(self._rows)

    @property
    def queued(self) -> int:
        with self._wake:
            return len(self._queue)

    @property
    def cache_bytes(self) -> int:
        """Bytes of the key-value rows allocated now."""
        slots = self._slots
        return slots.nbytes if slots is not None else 0

    def submit(self, run: GenerationRun, sink: Sink) -> None:
        """Start `run` in the next round, or queue it; HF_OVERLOADED when the queue is full."""
        with self._wake:
            if self._closed:
                raise RuntimeError(f"the scheduler of {self.name} is closed")
            if len(self._rows) + len(self._queue) >= self._capacity() + max(0, self.limits.queue_length):
                raise InferenceError(
                    HF_OVERLOADED,
                    f"{self.name} is busy: {len(self._rows)} generations run and {len(self._queue)} wait "
                    "(HF_MAX_BATCH_SIZE, HF_QUEUE_LENGTH); try again shortly",
                    {"running": len(self._rows), "queued": len(self._queue)},
                )
            self._queue.append(_Active(run, sink))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"generate-{self.name}", daemon=True)
                self._thread.start()
            self._wake.notify()

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel what is running or waiting and stop the thread."""
        with self._wake:
            self._closed = True
            for active in (*self._rows, *self._queue):
                active.run.cancel()
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _capacity(self) -> int:
        most = max(1, self.limits.max_batch_size)
        return min(most, self._slots.rows) if self._slots is not None and self._rows else most

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._rows and not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed and not self._rows and not self._queue:
                    self._slots = None
                    return
                waiting = self._admit()
            for active, events in waiting:
                self._deliver(active, events)
            if self._rows:
                self._round()

    def _admit(self) -> list[tuple[_Active, list[Event] | BaseException]]:
        """Move queued runs into free rows; end the ones cancelled or past their wait (under the lock)."""
        ended: list[tuple[_Active, list[Event] | BaseException]] = []
        now = time.monotonic()
        for active in list(self._queue):
            stopped = active.run.interrupted()
            if stopped is not None:
                self._queue.remove(active)
                ended.append((active, stopped))
        while self._queue and len(self._rows) < self._capacity():
            active = self._queue.popleft()
            if self.model.batches:
                self._attach(active, len(self._rows))
            self._rows.append(active)
            if self.on_admitted is not None:
                try:
                    self.on_admitted(now - active.submitted_at)
                except Exception:
                    log.exception("reporting a queue wait failed")
        for active in list(self._queue):  # the ones that could not start: past their wait?
            if now - active.submitted_at > self.limits.queue_wait_s:
                self._queue.remove(active)
                ended.append((active, self._waited_too_long(now - active.submitted_at)))
        return ended

    def _attach(self, active: _Active, row: int) -> None:
        """Give the run its row, starting from the longest saved prefix of its prompt."""
        if self._slots is None or self._slots.rows < self._capacity():
            self._slots = self.model.slot_cache(max(1, self.limits.max_batch_size))
            self._resident = None
        generator = active.run.generator
        state = self.model.new_sequence(self._slots, row)
        resident, self._resident = self._resident, None  # the row is this generation's from now on
        if generator.reuses_prefix:
            self._reword(active.run)
            prompt = generator.token_ids(generator.prompt_length)
            saved, length = self.prefixes.lookup(prompt)
            in_place = 0
            if resident is not None and resident[1] == row:  # what the row holds, leaving one token to feed
                in_place = min(common_length(resident[0], prompt), prompt.size - 1)
            if in_place >= max(length, MIN_TOKENS):  # the row holds it already
                state.length = in_place
                generator.skip_prompt(in_place)
            elif saved is not None:
                self._slots.write(row, saved.arrays, length)
                state.length = length
                generator.skip_prompt(length)
        generator.attach(state)
        active.state = state

    def _reword(self, run: GenerationRun) -> None:
        """Let a saved turn's own tokens stand for its text in the prompt (`PrefixCache.align`), here on the
        worker thread, where the turn that just ended has been saved."""
        generator, tokenizer = run.generator, run.tokenizer
        prompt = generator.token_ids(generator.prompt_length).tolist()
        aligned = self.prefixes.align(
            prompt, lambda ids: tokenizer.decode(ids, skip_special_tokens=False), tokenizer.special_ids
        )
        if aligned != prompt:
            with contextlib.suppress(InferenceError):  # more tokens than the context holds: keep the prompt
                generator.reword_prompt(aligned)

    def _waited_too_long(self, seconds: float) -> InferenceError:
        return InferenceError(
            HF_OVERLOADED,
            f"{self.name} is busy: the request waited {seconds:.1f}s for a free slot (HF_QUEUE_WAIT_S); "
            "try again shortly",
            {"waited_s": round(seconds, 3)},
        )

    def _round(self) -> None:
        results: dict[int, list[Event] | BaseException] = {}  # id of an _Active -> what it produced
        rows = list(self._rows)
        for active in rows:
            stopped = active.run.interrupted()
            if stopped is not None:
                results[id(active)] = stopped
        live = [a for a in rows if id(a) not in results]
        if not self.model.batches:
            for active in live:
                results[id(active)] = self._alone(active, lambda a: a.run.step())
        else:
            prompts = [a for a in live if a.run.generator.pending > 1]
            if prompts:  # one piece of one prompt per round, oldest first
                results[id(prompts[0])] = self._alone(prompts[0], self._prompt_step)
            decoding = [a for a in live if a.run.generator.pending == 1 and id(a) not in results]
            if len(decoding) == 1 and not prompts:
                results[id(decoding[0])] = self._alone(decoding[0], _decode_alone)
            elif decoding:
                results.update(self._batched(decoding))
        for active in rows:
            outcome = results.get(id(active))
            if outcome is None:
                continue
            if isinstance(outcome, BaseException) or active.run.done:  # saved before the caller hears the end,
                self._leave(active, saved=not isinstance(outcome, BaseException))  # so its next turn finds it
            self._deliver(active, outcome)

    def _prompt_step(self, active: _Active) -> list[Event]:
        """One piece of the prompt; the piece that reaches the end of a system prompt stops there, and that
        prefix is saved for the conversations that start with it."""
        generator, state, shared = active.run.generator, active.state, active.run.shared_prefix
        assert state is not None
        chunk = PREFILL_CHUNK
        if state.length < shared < state.length + generator.pending:
            chunk = min(chunk, shared - state.length)
        if generator.prefill_step(chunk):
            if state.length == shared and self._slots is not None and generator.reuses_prefix:
                tokens = generator.token_ids(shared)
                if not self.prefixes.holds(tokens):
                    self.prefixes.save(tokens, self._slots.read(state.row, shared), "system")
            return []
        return active.run.emit(generator.generate_next_tokens())

    def _alone(self, active: _Active, step: Callable[[_Active], list[Event]]) -> list[Event] | BaseException:
        try:
            return step(active)
        except InferenceError as exc:
            try:
                return active.run.failed(exc)
            except BaseException as failure:
                return failure
        except BaseException as exc:  # the run fails alone; the thread goes on serving the others
            active.run.generator.close()
            return exc

    def _batched(self, decoding: list[_Active]) -> dict[int, list[Event] | BaseException]:
        """One step over rows [0, last decoding row]: rows still feeding a prompt ride along unread (their
        next piece overwrites the position this step writes)."""
        slots = self._slots
        assert slots is not None
        count = max(a.state.row for a in decoding if a.state is not None) + 1
        tokens = [[0] for _ in range(count)]
        lengths = [0] * count
        for row, active in enumerate(self._rows[:count]):
            lengths[row] = active.state.length if active.state is not None else 0
        for active in decoding:
            assert active.state is not None
            tokens[active.state.row] = [active.run.generator.decode_input()]
        try:
            logits = self.model.forward_rows(slots, 0, tokens, lengths)
        except BaseException as exc:
            for active in decoding:
                active.run.generator.close()
            return {id(active): exc for active in decoding}
        results: dict[int, list[Event] | BaseException] = {}
        for active in decoding:
            generator = active.run.generator
            assert generator.state is not None
            results[id(active)] = self._alone(
                active, lambda a, row=generator.state.row: a.run.emit(a.run.generator.take_logits(logits[row, -1]))
            )
        return results

    def _leave(self, active: _Active, saved: bool) -> None:
        """Save the run's prefix (`saved`) and free its row: the last row's run moves into it (its cache the
        only one copied)."""
        state, slots = active.state, self._slots
        kept: np.ndarray | None = None
        reusable = saved and active.run.generator.reuses_prefix
        if reusable and state is not None and slots is not None and state.length >= MIN_TOKENS:
            kept = active.run.generator.token_ids(state.length)
            self.prefixes.save(kept, slots.read(state.row, state.length), "turn")
        with self._wake:
            index = self._rows.index(active)
            last = self._rows[-1]
            if kept is not None and last is active and state is not None:
                self._resident = (kept, state.row)
            if self.model.batches and last is not active and slots is not None:
                if last.state is not None:
                    slots.move_row(len(self._rows) - 1, index, last.state.length)
                    last.state.row = index
                self._rows[index] = last
                self._rows.pop()
            else:
                self._rows.remove(active)

    def _deliver(self, active: _Active, events: list[Event] | BaseException) -> None:
        try:
            active.sink(events)
        except Exception:
            log.exception("delivering events of a generation failed")


def _decode_alone(active: _Active) -> list[Event]:
    return active.run.emit(active.run.generator.generate_next_tokens())
