"""`PrefixCache`: saved key-value prefixes of one model, so a prompt that starts like an earlier one skips them.

A conversation's next turn repeats the whole history, and every new conversation starts with the same system
prompt. So when a generation ends, the cache of the tokens it fed is saved under those tokens (replacing the
saved turn it continued from), and the system prompt's cache is saved once when a sequence first passes its
end. A new generation copies the longest saved prefix it shares into its own row and feeds only the rest:
the key-value entries of a token depend only on the tokens before it, so the text is the same as after a
fresh prefill. Entries are copies (a row is never shared), counted in bytes against a budget and evicted
least recently used; a generation in progress holds no entry, so eviction never touches one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

MIN_TOKENS = 16  # shorter prefixes are cheaper to feed again than to keep


@dataclass(slots=True)
class SavedPrefix:
    tokens: np.ndarray  # int64 token ids the arrays hold the cache of
    arrays: list[np.ndarray]  # one [heads, length, head size] array per cache tensor
    kind: Literal["turn", "system"]
    last_used: float = field(default_factory=time.monotonic)

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays)


class PrefixCache:
    """The saved prefixes of one model, within `budget_bytes` (0: keep none)."""

    def __init__(self, budget_bytes: int = 0) -> None:
        self.budget_bytes = budget_bytes
        self._entries: list[SavedPrefix] = []
        self._lock = threading.Lock()
        self.hits = 0  # lookups that found a prefix (for tests and figures)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(entry.nbytes for entry in self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def lookup(self, prompt: Sequence[int]) -> tuple[SavedPrefix | None, int]:
        """The saved prefix sharing the most leading tokens with `prompt`, and how many of them to use (at
        least one prompt token is always left to feed)."""
        ids = np.asarray(prompt, dtype=np.int64)
        best, best_length = None, 0
        with self._lock:
            for entry in self._entries:
                length = _common_length(entry.tokens, ids)
                if length > best_length:
                    best, best_length = entry, length
            usable = min(best_length, len(ids) - 1)
            if best is None or usable < MIN_TOKENS:
                return None, 0
            best.last_used = time.monotonic()
            self.hits += 1
            return best, usable

    def holds(self, tokens: Sequence[int]) -> bool:
        """Whether exactly these tokens are saved."""
        ids = np.asarray(tokens, dtype=np.int64)
        with self._lock:
            return any(e.tokens.size == ids.size and _common_length(e.tokens, ids) == ids.size for e in self._entries)

    def save(self, tokens: Sequence[int], arrays: list[np.ndarray], kind: Literal["turn", "system"]) -> None:
        """Keep `arrays` as the cache of `tokens`; a saved turn that this one continues is dropped."""
        ids = np.asarray(tokens, dtype=np.int64)
        entry = SavedPrefix(ids, arrays, kind)
        if ids.size < MIN_TOKENS or entry.nbytes > self.budget_bytes:
            return
        with self._lock:
            self._entries = [
                e
                for e in self._entries
                if not (
                    e.kind == "turn" and e.tokens.size <= ids.size and _common_length(e.tokens, ids) == e.tokens.size
                )
            ]
            self._entries.append(entry)
            self._evict(self.budget_bytes)

    def trim(self, budget_bytes: int) -> int:
        """Evict least recently used prefixes until at most `budget_bytes` are kept; return the bytes freed."""
        with self._lock:
            before = sum(e.nbytes for e in self._entries)
            self._evict(budget_bytes)
            return before - sum(e.nbytes for e in self._entries)

    def _evict(self, budget_bytes: int) -> None:
        self._entries.sort(key=lambda e: e.last_used)
        total = sum(e.nbytes for e in self._entries)
        while self._entries and total > budget_bytes:
            total -= self._entries.pop(0).nbytes


def _common_length(saved: np.ndarray, prompt: np.ndarray) -> int:
    size = min(saved.size, prompt.size)
    differ = np.flatnonzero(saved[:size] != prompt[:size])
    return int(differ[0]) if differ.size else size
