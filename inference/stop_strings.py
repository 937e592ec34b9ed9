"""Holding back streamed text that might be the start of a stop string, so a stop string is never emitted."""

from __future__ import annotations

from collections.abc import Sequence


class StopStringFilter:
    """Pass text through, withholding any tail that could still grow into one of the stop strings."""

    def __init__(self, stop_strings: Sequence[str]) -> None:
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.stopped = False
        self._held = ""

    def push(self, text: str) -> str:
        """Text that is now safe to emit; sets `stopped` when a stop string completes (it is dropped)."""
        if not self.stop_strings:
            return text
        if self.stopped:
            return ""
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self.stop_strings) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return buffer[: min(hits)]
        keep = self._partial_tail(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """What was held back, once generation ended without completing a stop string."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_tail(self, buffer: str) -> int:
        """Length of the longest end of `buffer` that is a proper prefix of some stop string."""
        longest = 0
        for stop in self.stop_strings:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
