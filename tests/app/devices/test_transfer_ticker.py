"""app.devices.transfer_ticker: which updates reach the card, and when a transfer ends."""

from __future__ import annotations

from app.devices.transfer_ticker import TransferTicker
from core.cluster.transfer_rate import TransferEstimate

MB = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def ticker_and_seen(clock: FakeClock) -> tuple[TransferTicker, list[TransferEstimate]]:
    ticker = TransferTicker(clock=clock)
    seen: list[TransferEstimate] = []
    ticker.changed.connect(seen.append)
    return ticker, seen


def test_the_first_update_shows_at_once_the_rest_wait_for_the_timer(qapp):
    clock = FakeClock()
    ticker, seen = ticker_and_seen(clock)
    ticker.update(0, 100 * MB)
    assert [e.done for e in seen] == [0] and ticker.ticking
    for i in range(1, 21):
        clock.t = i * 0.1
        ticker.update(i * MB, 100 * MB)
    assert len(seen) == 1  # no event loop ran: no redraw
    ticker.refresh()  # what the timer does
    assert seen[-1].done == 20 * MB and seen[-1].rate == 10 * MB


def test_the_last_update_shows_at_once_and_ends_the_transfer(qapp):
    clock = FakeClock()
    ticker, seen = ticker_and_seen(clock)
    ticker.update(0, 100 * MB)
    clock.t = 2
    ticker.update(100 * MB, 100 * MB)
    assert seen[-1].finished and not ticker.ticking and not ticker.active


def test_after_stop_a_transfer_is_measured_afresh(qapp):
    clock = FakeClock()
    ticker, seen = ticker_and_seen(clock)
    for i in range(30):
        clock.t = i * 0.1
        ticker.update(i * MB, 100 * MB)
    ticker.refresh()
    assert seen[-1].rate is not None
    ticker.stop()  # the card showed a status row in between
    assert not ticker.ticking and not ticker.active
    ticker.refresh()
    assert len(seen) == 2  # nothing to show once stopped
    clock.t += 60
    ticker.update(40 * MB, 100 * MB)  # a later load resumes the shipping
    assert seen[-1].rate is None and ticker.ticking  # not 0 B/s over the minute between


def test_the_end_repeated_by_the_sender_is_shown_once(qapp):
    clock = FakeClock()
    ticker, seen = ticker_and_seen(clock)
    for i in range(31):
        clock.t = i * 0.1
        ticker.update(i * MB, 30 * MB)
    for _ in range(3):  # the last chunk's ack, then the file's and the commit's
        ticker.update(30 * MB, 30 * MB)
    assert [e.finished for e in seen] == [False, True]
    assert seen[-1].rate == 10 * MB and not ticker.active
