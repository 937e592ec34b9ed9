"""The slot buffers keep what their rows hold when they grow, and copy nothing else."""

from __future__ import annotations

import numpy as np

from inference.kv_slots import MIN_LENGTH, CacheLayout, SlotCache

LAYOUTS = [CacheLayout(f"past.{i}", f"present.{i}", heads=2, head_size=4, dtype=np.float32) for i in range(2)]


def _filled(length: int, value: float) -> list[np.ndarray]:
    return [np.full((2, length, 4), value, dtype=np.float32) for _ in LAYOUTS]


def test_a_growth_keeps_every_row_written_so_far() -> None:
    slots = SlotCache(LAYOUTS, rows=3, max_length=4096)
    slots.write(0, _filled(10, 1.0), 10)
    slots.reserve(MIN_LENGTH)
    slots.arrays()[0][2, :, :5] = 7.0  # a step's output, as the graph writes it in place
    slots.wrote(2, [5])

    slots.reserve(MIN_LENGTH * 4)

    assert slots.length == MIN_LENGTH * 4
    for array in slots.arrays():
        assert (array[0, :, :10] == 1.0).all()
    assert (slots.arrays()[0][2, :, :5] == 7.0).all()


def test_a_growth_copies_no_position_that_was_never_written() -> None:
    slots = SlotCache(LAYOUTS, rows=3, max_length=4096)
    slots.write(1, _filled(8, 1.0), 8)
    slots.arrays()[0][1, :, 8:20] = 5.0  # past what the row holds: rejected drafts, a ride-along position
    slots.arrays()[0][2, :, :20] = 5.0  # a row no step was noted in

    slots.reserve(slots.length * 2)

    first = slots.arrays()[0]
    assert (first[1, :, :8] == 1.0).all()
    assert not first[1, :, 8:].any()
    assert not first[2].any()


def test_a_row_moved_away_from_is_not_kept() -> None:
    slots = SlotCache(LAYOUTS, rows=2, max_length=4096)
    slots.write(0, _filled(6, 1.0), 6)
    slots.write(1, _filled(9, 2.0), 9)

    slots.move_row(1, 0, 9)  # row 0's sequence left; row 1's takes its place
    slots.reserve(slots.length * 2)

    for array in slots.arrays():
        assert (array[0, :, :9] == 2.0).all()
        assert not array[1].any()
