"""Stop strings: the text ends just before the first one, and no piece of one is ever
streamed, however the pieces fall."""

from __future__ import annotations

import pytest

from core.serve.stop_text import StopText


def _run(stops, pieces):
    st = StopText(stops)
    shown = [st.feed(p) for p in pieces]
    if not st.hit:
        shown.append(st.finish())
    return "".join(shown), st.hit, shown


@pytest.mark.parametrize("pieces", [["Hello wor", "ld. STOP here"], ["Hello world. S", "T",
                                    "OP", " here"], list("Hello world. STOP here")])
def test_text_ends_before_the_stop_however_it_is_cut(pieces):
    text, hit, shown = _run(["STOP"], pieces)
    assert (text, hit) == ("Hello world. ", True)
    assert not any("S" in s for s in shown)


def test_a_held_back_tail_that_is_no_stop_comes_out():
    text, hit, shown = _run(["STOP"], ["Hello ST", "ART", ""])
    assert (text, hit) == ("Hello START", False)
    assert shown[0] == "Hello "  # "ST" waited for the next piece


def test_the_earliest_of_several_stops_wins():
    assert _run(["lazy", "fox"], ["the quick brown fox jumps over the lazy dog"])[:2] == \
        ("the quick brown ", True)
    assert _run(["\n\n", "."], ["one\n", "\ntwo."])[:2] == ("one", True)


def test_a_held_tail_at_the_end_is_flushed():
    assert _run(["</s>"], ["answer </"])[:2] == ("answer </", False)


def test_no_stops_shows_everything_at_once():
    st = StopText([])
    assert st.feed("abc") == "abc" and st.finish() == "" and not st.hit


def test_nothing_after_a_hit():
    st = StopText(["x"])
    assert st.feed("axb") == "a" and st.feed("more") == "" and st.finish() == ""
