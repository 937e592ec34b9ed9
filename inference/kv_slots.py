"""`SlotCache`: one preallocated key-value buffer per cache tensor, `rows x heads x length x head size`.

Graphs whose attention is GroupQueryAttention (exports/attention.py) read a cache row only up to the
length the attention mask gives that row, and write a step's new positions right after it. When the same
buffer is bound as both the past input and the present output, the op appends in place (its shared-buffer
mode). So every sequence of a model owns one row of these buffers for as long as it runs: a batched step
binds rows `[first, first + count)` (a contiguous block, bound by address, no copy), each row at its own
length; a sequence that joins takes the next free row, and one that leaves hands its row to the last
sequence, whose cache is the only one copied. The buffers grow (a doubling) when a sequence passes their
length, so memory follows the longest sequence rather than the full context; a growth copies only the
positions each row has had written, so rows never used are never touched (nor paged in).

On CPU the buffers are numpy arrays; on CUDA they are device OrtValues, and the rare copies (a row moved, a
growth, a prefix saved or restored) go through the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

MIN_LENGTH = 64  # positions a new buffer holds at least; it doubles from there


@dataclass(frozen=True, slots=True)
class CacheLayout:
    """What one cache tensor looks like: its graph names, heads, head size and element type."""

    past_name: str
    present_name: str
    heads: int
    head_size: int
    dtype: type


class SlotCache:
    """The key-value rows of up to `rows` sequences of one model, bound to a step by address."""

    def __init__(
        self, layouts: Sequence[CacheLayout], rows: int, max_length: int, device: str = "cpu", device_id: int = 0
    ) -> None:
        self.layouts = tuple(layouts)
        self.rows = rows
        self.max_length = max_length
        self.device = device
        self.device_id = device_id
        self.length = 0  # positions each row holds now (0: nothing allocated yet)
        self._written = [0] * rows  # per row, the positions written so far (what a growth must keep)
        self._host: list[np.ndarray] = []  # CPU: the buffers themselves
        self._values: list[ort.OrtValue] = []

    @property
    def nbytes(self) -> int:
        return sum(
            self.rows * layout.heads * self.length * layout.head_size * np.dtype(layout.dtype).itemsize
            for layout in self.layouts
        )

    def reserve(self, length: int) -> None:
        """Make every row hold at least `length` positions (doubling), keeping what the rows hold."""
        if length <= self.length:
            return
        if length > self.max_length:
            raise ValueError(f"a cache row cannot hold {length} positions (at most {self.max_length})")
        grown = min(self.max_length, max(MIN_LENGTH, self.length * 2, _power_of_two(length)))
        old = self.arrays() if self.length else []
        self._allocate(grown)
        kept = [(row, written) for row, written in enumerate(self._written) if written]
        if old and kept:
            fresh = self.arrays()
            for source, target in zip(old, fresh, strict=True):
                for row, written in kept:
                    target[row, :, :written] = source[row, :, :written]
            self._store(fresh)

    def wrote(self, first: int, ends: Sequence[int]) -> None:
        """Note that rows `first, first + 1, ...` now hold `ends[i]` positions (a step appended to them)."""
        for row, end in enumerate(ends, start=first):
            self._written[row] = max(self._written[row], min(end, self.length))

    def bind(self, binding: ort.IOBinding, first: int, count: int) -> None:
        """Bind rows `[first, first + count)` as both past and present of every cache tensor (no copy)."""
        for layout, value in zip(self.layouts, self._values, strict=True):
            shape = (count, layout.heads, self.length, layout.head_size)
            row_bytes = layout.heads * self.length * layout.head_size * np.dtype(layout.dtype).itemsize
            address = value.data_ptr() + first * row_bytes
            binding.bind_input(layout.past_name, self.device, self.device_id, layout.dtype, shape, address)
            binding.bind_output(layout.present_name, self.device, self.device_id, layout.dtype, shape, address)

    def move_row(self, source: int, target: int, length: int) -> None:
        """Copy the first `length` positions of row `source` into row `target` (a sequence changing rows)."""
        arrays = self.arrays()
        for array in arrays:
            array[target, :, :length] = array[source, :, :length]
        self._store(arrays)
        self._written[target], self._written[source] = length, 0

    def read(self, row: int, length: int) -> list[np.ndarray]:
        """A copy of the first `length` positions of `row`, one array per cache tensor (a saved prefix)."""
        return [np.array(array[row, :, :length]) for array in self.arrays()]

    def write(self, row: int, saved: Sequence[np.ndarray], length: int) -> None:
        """Put the first `length` positions of a saved prefix into `row`."""
        self.reserve(length)
        arrays = self.arrays()
        for array, part in zip(arrays, saved, strict=True):
            array[row, :, :length] = part[:, :length]
        self._store(arrays)
        self._written[row] = max(self._written[row], length)

    def arrays(self) -> list[np.ndarray]:
        """The buffers as numpy arrays: the buffers themselves on CPU, host copies on CUDA."""
        if self.device == "cpu":
            return self._host
        return [value.numpy() for value in self._values]

    def release(self) -> None:
        self._host, self._values, self.length = [], [], 0
        self._written = [0] * self.rows

    def _allocate(self, length: int) -> None:
        self.length = length
        if self.device == "cpu":
            self._host = [
                np.zeros((self.rows, layout.heads, length, layout.head_size), dtype=layout.dtype)
                for layout in self.layouts
            ]
            self._values = [ort.OrtValue.ortvalue_from_numpy(array) for array in self._host]
        else:
            self._values = [
                ort.OrtValue.ortvalue_from_shape_and_type(
                    (self.rows, layout.heads, length, layout.head_size), layout.dtype, self.device, self.device_id
                )
                for layout in self.layouts
            ]

    def _store(self, arrays: list[np.ndarray]) -> None:
        """Send host copies back to the device (CUDA); on CPU the arrays are the buffers already."""
        if self.device != "cpu":
            for value, array in zip(self._values, arrays, strict=True):
                value.update_inplace(np.ascontiguousarray(array))


def _power_of_two(value: int) -> int:
    return 1 << max(0, value - 1).bit_length()
