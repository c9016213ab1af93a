"""TextBatcher: the first text at once, then chunks at most every interval, all at the end."""

from __future__ import annotations

from core.serve.text_batcher import TextBatcher


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def batcher(interval_s: float) -> tuple[TextBatcher, list[str], Clock]:
    sent, clock = [], Clock()
    return TextBatcher(sent.append, interval_s, clock), sent, clock


def test_fast_tokens_are_gathered_and_the_first_goes_at_once():
    b, sent, clock = batcher(0.05)
    for piece in ["The", " capital", " of", " France"]:  # a token every 7 ms
        b.push(piece)
        clock.t += 0.007
    assert sent == ["The"]  # time to first token is not delayed
    clock.t += 0.05
    b.push(" is")
    assert sent == ["The", " capital of France is"]
    b.flush(" Paris.")
    assert sent == ["The", " capital of France is", " Paris."]
    assert "".join(sent) == "The capital of France is Paris."


def test_slow_tokens_each_go_the_moment_they_are_made():
    b, sent, clock = batcher(0.05)
    for piece in ["A", " big", " model"]:  # 120 ms a token, as on home devices
        b.push(piece)
        clock.t += 0.12
    assert sent == ["A", " big", " model"]
    b.flush()
    assert sent == ["A", " big", " model"]  # nothing left, no empty chunk


def test_interval_zero_sends_every_piece_and_empty_pieces_never():
    b, sent, _ = batcher(0.0)
    for piece in ["a", "", "b", "c"]:
        b.push(piece)
    b.flush("")
    assert sent == ["a", "b", "c"]
