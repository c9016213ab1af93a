"""core.cluster.transfer_rate: the smoothed rate and time left in fake time (a steady link,
a stall, lumpy acks, a burst), and the words for them."""

from __future__ import annotations

import pytest

from core.cluster.transfer_rate import (
    GRACE_S,
    WINDOW_S,
    TransferEstimate,
    TransferRate,
    format_amount,
    format_duration,
    format_rate,
    shipping_line,
)

MB = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def feed(meter: TransferRate, clock: FakeClock, start: int, rate: float, seconds: float,
         every: float = 0.1, total: int = 1000 * MB) -> tuple[int, TransferEstimate]:
    """Reports every `every` s for `seconds` s of a link moving `rate` bytes/s."""
    done, e = start, meter.update(start, total)
    for _ in range(round(seconds / every)):
        clock.t += every
        done += int(rate * every)
        e = meter.update(done, total)
    return done, e


def test_a_steady_link_estimates_only_after_a_second_then_gives_its_rate_and_time_left():
    clock = FakeClock()
    meter = TransferRate(clock)
    e = meter.update(0, 980 * MB)
    assert (e.rate, e.eta_s) == (None, None)
    assert shipping_line(e) == "Shipping 0 / 980 MB \u00b7 estimating\u2026"
    done, e = feed(meter, clock, 0, 10 * MB, 0.9, total=980 * MB)
    assert e.rate is None  # under a second measured: no number that would jump
    done, e = feed(meter, clock, done, 10 * MB, 0.2, total=980 * MB)
    assert e.rate == pytest.approx(10 * MB)
    assert e.eta_s == pytest.approx((980 * MB - done) / (10 * MB))
    done, e = feed(meter, clock, done, 10 * MB, 20, total=980 * MB)
    assert e.rate == pytest.approx(10 * MB) and e.eta_s == pytest.approx(
        (980 * MB - done) / (10 * MB))


def test_the_line_of_the_card_and_the_command_line():
    clock = FakeClock()
    meter = TransferRate(clock)
    _, e = feed(meter, clock, 412 * MB - 60 * 1_130_000, 11.3 * MB, 6, total=980 * MB)
    assert e.done == 412 * MB
    assert shipping_line(e) == "Shipping 412 / 980 MB \u00b7 11.3 MB/s \u00b7 50 s left"
    clock.t += 1
    assert shipping_line(meter.update(980 * MB, 980 * MB)).startswith("Shipped 980 MB \u00b7 ")


def test_a_stall_keeps_the_rate_for_a_moment_then_decays_to_stalled():
    clock = FakeClock()
    meter = TransferRate(clock)
    done, e = feed(meter, clock, 0, 10 * MB, 10)
    assert e.rate == pytest.approx(10 * MB)
    clock.t += GRACE_S  # the usual gap between two reports: no change yet
    assert meter.estimate().rate == pytest.approx(10 * MB)
    clock.t += WINDOW_S / 2
    half = meter.estimate()
    assert 0.3 * 10 * MB < half.rate < 0.7 * 10 * MB
    assert half.eta_s > e.eta_s  # a slower link: more time left
    clock.t += WINDOW_S / 2 + 0.01
    stalled = meter.estimate()
    assert stalled.rate == 0 and stalled.eta_s is None
    assert shipping_line(stalled) == "Shipping 0.1 / 1.0 GB \u00b7 stalled"
    # bytes again: the rate comes back as the window fills
    _, e = feed(meter, clock, done, 10 * MB, WINDOW_S + 1)
    assert e.rate == pytest.approx(10 * MB, rel=0.05)


def test_lumpy_acks_give_a_steady_rate():
    """2 MB every 2 s (acks that arrive in lumps) reads as about 1 MB/s all along."""
    clock = FakeClock()
    meter = TransferRate(clock)
    done, seen = 0, []
    meter.update(done, 1000 * MB)
    for tick in range(1, 301):  # 30 s; the display asks ten times a second
        clock.t += 0.1
        if tick % 20 == 0:
            done += 2 * MB
            meter.update(done, 1000 * MB)
        if tick > 60:  # past the first window
            seen.append(meter.estimate().rate)
    assert all(0.8 * MB < r < 1.25 * MB for r in seen), (min(seen), max(seen))


def test_a_burst_moves_the_rate_by_its_share_of_the_window_then_passes():
    clock = FakeClock()
    meter = TransferRate(clock)
    done, e = feed(meter, clock, 0, 1 * MB, 10)
    assert e.rate == pytest.approx(1 * MB)
    clock.t += 0.1
    done += 20 * MB  # 20 MB at once: acks held back by a busy worker, then all together
    e = meter.update(done, 1000 * MB)
    assert e.rate < 1 * MB + 21 * MB / WINDOW_S  # not 200 MB/s
    assert e.rate == pytest.approx((5 * MB + 20 * MB) / WINDOW_S, rel=0.05)
    _, e = feed(meter, clock, done, 1 * MB, WINDOW_S + 1)
    assert e.rate == pytest.approx(1 * MB, rel=0.05)


def test_fewer_bytes_than_before_is_a_new_transfer():
    clock = FakeClock()
    meter = TransferRate(clock)
    feed(meter, clock, 0, 10 * MB, 10)
    clock.t += 0.1
    e = meter.update(0, 500 * MB)  # shipping again, say to the same device after a re-plan
    assert e.rate is None and e.total == 500 * MB


def test_an_already_complete_transfer_is_finished_at_once():
    e = TransferRate(FakeClock()).update(340_000, 340_000)
    assert e.finished and e.fraction == 1.0 and e.eta_s is None
    assert shipping_line(e) == "Shipped 340 KB"


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (0.3, "1 s"), (50.27, "50 s"), (59.4, "59 s"), (59.6, "1 min"),
    (200, "3 min 20 s"), (180, "3 min"), (3600, "1 h"), (3900, "1 h 5 min"),
    (7260, "2 h 1 min")])
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("rate, text", [
    (500, "500 B/s"), (850_000, "850 KB/s"), (11.3 * MB, "11.3 MB/s"), (112 * MB, "112 MB/s"),
    (1.2e9, "1.2 GB/s")])
def test_rates_in_decimal_units(rate, text):
    assert format_rate(rate) == text


@pytest.mark.parametrize("done, total, text", [
    (412 * MB, 980 * MB, "412 / 980 MB"), (979.6 * MB, 980 * MB, "979 / 980 MB"),
    (980 * MB, 980 * MB, "980 / 980 MB"), (400 * MB, 3_200 * MB, "0.4 / 3.2 GB"),
    (5_000, 340_000, "5 / 340 KB")])
def test_amounts_share_the_unit_of_the_total_and_never_round_up_to_done(done, total, text):
    assert format_amount(int(done), int(total)) == text
