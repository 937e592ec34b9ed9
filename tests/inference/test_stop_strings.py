"""Stop strings end the reply and are never streamed, even when they arrive split across tokens."""

from __future__ import annotations

from inference.stop_strings import StopStringFilter


def _feed(stops: tuple[str, ...], pieces: list[str]) -> tuple[str, bool]:
    gate = StopStringFilter(stops)
    out = []
    for piece in pieces:
        out.append(gate.push(piece))
        if gate.stopped:
            break
    out.append(gate.flush())
    return "".join(out), gate.stopped


def test_text_passes_unchanged_without_stop_strings() -> None:
    assert _feed((), ["Hel", "lo"]) == ("Hello", False)


def test_a_stop_string_split_over_pieces_is_dropped_with_what_follows() -> None:
    assert _feed(("###",), ["Answer: 4", "#", "#", "# more"]) == ("Answer: 4", True)


def test_the_earliest_stop_string_wins() -> None:
    assert _feed(("END", "\n\n"), ["one\n\ntwo END"]) == ("one", True)


def test_a_partial_match_that_does_not_complete_is_released() -> None:
    gate = StopStringFilter(("</s>",))
    assert gate.push("a </") == "a "  # "</" might start the stop string: held back
    assert gate.push("b>") == "</b>"
    assert not gate.stopped


def test_held_back_text_is_flushed_when_generation_ends() -> None:
    assert _feed(("STOP",), ["the end ST"]) == ("the end ST", False)
