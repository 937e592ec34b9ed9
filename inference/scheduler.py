"""`Scheduler`: one worker thread per loaded model that advances every active run one token per round.

Runs take turns step by step, so concurrent requests all progress and none waits for another to finish;
each run keeps its own cache, so its text is what it would be alone. One thread per model also means one
ONNX Runtime call at a time, which is what the CPU wants with intra-op threads on every core. A later batching
change replaces `_round` with one batched forward over the runs' queued tokens.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from inference.events import Event
from inference.run import GenerationRun

log = logging.getLogger(__name__)

Sink = Callable[[list[Event] | BaseException], None]


class Scheduler:
    """Owns the worker thread; `submit` hands it a run and a sink for that run's events."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._runs: list[tuple[GenerationRun, Sink]] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> int:
        with self._wake:
            return len(self._runs)

    def submit(self, run: GenerationRun, sink: Sink) -> None:
        with self._wake:
            if self._closed:
                raise RuntimeError(f"the scheduler of {self.name} is closed")
            self._runs.append((run, sink))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"generate-{self.name}", daemon=True)
                self._thread.start()
            self._wake.notify()

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel what is running and stop the thread."""
        with self._wake:
            self._closed = True
            for run, _ in self._runs:
                run.cancel()
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._runs and not self._closed:
                    self._wake.wait()
                if not self._runs:
                    return
                runs = list(self._runs)
            self._round(runs)

    def _round(self, runs: list[tuple[GenerationRun, Sink]]) -> None:
        for run, sink in runs:
            try:
                events: list[Event] | BaseException = run.step()
            except BaseException as exc:  # the run fails alone; the thread goes on serving the others
                run.generator.close()
                events = exc
            if isinstance(events, BaseException) or run.done:
                with self._wake:
                    self._runs.remove((run, sink))
            try:
                sink(events)
            except Exception:
                log.exception("delivering events of a generation failed")
