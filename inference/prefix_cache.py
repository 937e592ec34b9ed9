"""`PrefixCache`: saved key-value prefixes of one model, so a prompt that starts like an earlier one skips them.

A conversation's next turn repeats the whole history, and every new conversation starts with the same system
prompt. So when a generation ends, the cache of the tokens it fed is saved under those tokens (replacing the
saved turn it continued from), and the system prompt's cache is saved once when a sequence first passes its
end. A new generation copies the longest saved prefix it shares into its own row and feeds only the rest:
the key-value entries of a token depend only on the tokens before it, so the text is the same as after a
fresh prefill. A reply's own tokens are often not what its text gives when the next prompt tokenizes it
again (a model may write "Alessandro" as other pieces than the tokenizer would), so before the lookup the
prompt takes a saved turn's tokens in place of the same text (`align`); otherwise the whole reply would be fed
again. Entries are copies (a row is never shared), counted in bytes against a budget and evicted
least recently used; a generation in progress holds no entry, so eviction never touches one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

MIN_TOKENS = 16  # shorter prefixes are cheaper to feed again than to keep
LAST_PART_TRIES = 8  # saved reply ends tried against the prompt's tokens (a reply cut inside a word)


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
                length = common_length(entry.tokens, ids)
                if length > best_length:
                    best, best_length = entry, length
            usable = min(best_length, len(ids) - 1)
            if best is None or usable < MIN_TOKENS:
                return None, 0
            best.last_used = time.monotonic()
            self.hits += 1
            return best, usable

    def align(
        self, prompt: Sequence[int], decode: Callable[[Sequence[int]], str], special: Collection[int] = ()
    ) -> list[int]:
        """`prompt` with a saved turn's own tokens in place of the same text tokenized afresh.

        Between the chat template's `special` tokens, which must match exactly, a part of the prompt may stand
        for a saved part that decodes to the same text (`decode` keeps special tokens). The saved turn that
        covers the most of the prompt this way becomes its prefix, so the lookup finds all of it.
        """
        ids = np.asarray(prompt, dtype=np.int64)
        with self._lock:
            turns = [e.tokens for e in self._entries if e.kind == "turn"]
        best, best_used = list(prompt), 0
        marks = np.fromiter(special, dtype=np.int64)
        for saved in turns:
            used, end = _text_aligned(saved, ids, decode, marks)
            if used > best_used and used >= MIN_TOKENS and end < ids.size:
                best, best_used = [*saved[:used].tolist(), *ids[end:].tolist()], used
        return best

    def holds(self, tokens: Sequence[int]) -> bool:
        """Whether exactly these tokens are saved."""
        ids = np.asarray(tokens, dtype=np.int64)
        with self._lock:
            return any(e.tokens.size == ids.size and common_length(e.tokens, ids) == ids.size for e in self._entries)

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
                    e.kind == "turn" and e.tokens.size <= ids.size and common_length(e.tokens, ids) == e.tokens.size
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


def _text_aligned(
    saved: np.ndarray, ids: np.ndarray, decode: Callable[[Sequence[int]], str], special: np.ndarray
) -> tuple[int, int]:
    """How many leading `saved` tokens stand for how many leading `ids`: equal tokens, or, between special
    tokens, parts that decode to the same text. The last saved part (a reply without its end token) may
    stand for the start of a longer prompt part."""
    used = position = 0
    while True:
        same = common_length(saved[used:], ids[position:])
        used, position = used + same, position + same
        if used == saved.size or position == ids.size:
            return used, position
        saved_end, ids_end = _part_end(saved, used, special), _part_end(ids, position, special)
        if saved_end == used or ids_end == position:  # a special token differs
            return used, position
        if saved_end == saved.size:  # the reply: its end may fall inside a token of the prompt's
            for last in range(saved.size, max(used, saved.size - LAST_PART_TRIES), -1):
                end = _same_text_end(ids[:ids_end], position, decode(saved[used:last].tolist()), decode)
                if end is not None:
                    return last, end
            return used, position
        if decode(ids[position:ids_end].tolist()) != decode(saved[used:saved_end].tolist()):
            return used, position
        used, position = saved_end, ids_end


def _part_end(ids: np.ndarray, start: int, special: np.ndarray) -> int:
    """The index of the first special token at or after `start` (or the end)."""
    found = np.flatnonzero(np.isin(ids[start:], special))
    return start + int(found[0]) if found.size else int(ids.size)


def _same_text_end(ids: np.ndarray, start: int, text: str, decode: Callable[[Sequence[int]], str]) -> int | None:
    """The end of the span of `ids` from `start` that decodes to exactly `text`, if there is one.

    The decoded length grows with the span, so a binary search finds the shortest span at least as long as
    `text`; one span beyond it is tried too (a token that decodes to nothing, such as a partial character).
    """
    low, high = start + 1, ids.size
    while low < high:
        middle = (low + high) // 2
        if len(decode(ids[start:middle].tolist())) < len(text):
            low = middle + 1
        else:
            high = middle
    for end in (low, low + 1):
        if end <= ids.size and decode(ids[start:end].tolist()) == text:
            return end
    return None


def common_length(saved: np.ndarray, prompt: np.ndarray) -> int:
    """How many leading tokens the two sequences share."""
    size = min(saved.size, prompt.size)
    differ = np.flatnonzero(saved[:size] != prompt[:size])
    return int(differ[0]) if differ.size else size
