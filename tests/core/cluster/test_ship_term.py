"""core.cluster.ship_term: the command line's shipping line, redrawn in place (fake time)."""

from __future__ import annotations

import io

from core.cluster.ship_term import BAR, REDRAW_S, ShipTermLine

MB = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def screen(out: str) -> str:
    """What a terminal shows on the current row: the text after the last carriage return."""
    return out.rsplit("\r", 1)[-1]


def test_the_line_says_the_device_the_bar_the_rate_and_the_time_left():
    clock, out = FakeClock(), io.StringIO()
    line = ShipTermLine("mini-pc", out, clock, columns=100)
    done = 412 * MB - 60 * 1_130_000
    line(done, 980 * MB)
    assert screen(out.getvalue()) == (
        f"'mini-pc' [{'#' * 7:<{BAR}}] Shipping 344 / 980 MB \u00b7 estimating\u2026")
    for _ in range(60):
        clock.t += 0.1
        done += 1_130_000
        line(done, 980 * MB)
    # the last report may fall between two redraws: one more 0.1 s later, and one of the
    # two is on screen
    clock.t += 0.1
    line(done, 980 * MB)
    assert screen(out.getvalue()).rstrip() == (
        f"'mini-pc' [{'#' * 8:<{BAR}}] Shipping 412 / 980 MB \u00b7 11.3 MB/s \u00b7 50 s left")
    assert "\n" not in out.getvalue()
    clock.t += 0.1
    line(980 * MB, 980 * MB)
    assert out.getvalue().endswith("\n")
    assert screen(out.getvalue()).startswith(f"'mini-pc' [{'#' * BAR}] Shipped 980 MB \u00b7 ")


def test_a_report_per_chunk_is_drawn_a_few_times_a_second():
    clock, out = FakeClock(), io.StringIO()
    line = ShipTermLine("nas", out, clock, columns=100)
    for i in range(1000):  # 10 s of an ack every 10 ms
        clock.t = i * 0.01
        line(i * MB, 10_000 * MB)
    draws = out.getvalue().count("\r")
    assert 10 / REDRAW_S - 2 <= draws <= 10 / REDRAW_S + 2


def test_a_shorter_line_covers_the_longer_one_before_it():
    clock, out = FakeClock(), io.StringIO()
    line = ShipTermLine("nas", out, clock, columns=100)
    done = 0
    for _ in range(20):  # 2 s at 1 MB/s of 1000 MB: "16 min 38 s left"
        clock.t += 0.1
        done += 100_000
        line(done, 1000 * MB)
    longer = len(screen(out.getvalue()))
    clock.t += 10  # a stall: "stalled" is shorter than the rate and time left
    line(done, 1000 * MB)
    shown = screen(out.getvalue())
    assert shown.rstrip().endswith("\u00b7 stalled") and len(shown) == longer


def test_a_narrow_terminal_shortens_the_device_name_never_the_numbers():
    clock, out = FakeClock(), io.StringIO()
    line = ShipTermLine("the big desktop upstairs in the study", out, clock, columns=70)
    line(0, 980 * MB)
    shown = screen(out.getvalue())
    assert len(shown) <= 69 and shown.endswith("Shipping 0 / 980 MB \u00b7 estimating\u2026")
    assert shown.startswith("'the big") and "\u2026 [" in shown


def test_close_ends_an_unfinished_line_and_a_new_ship_is_measured_afresh():
    clock, out = FakeClock(), io.StringIO()
    line = ShipTermLine("nas", out, clock, columns=100)
    for i in range(30):
        clock.t = i * 0.1
        line(i * MB, 100 * MB)
    line.close()
    assert out.getvalue().endswith("\n")
    line.close()
    assert not out.getvalue().endswith("\n\n")  # nothing on screen: nothing to end
    clock.t += 60
    line(30 * MB, 100 * MB)  # shipping again later, resuming
    assert screen(out.getvalue()).rstrip().endswith("estimating\u2026")


def test_the_end_repeated_for_each_files_ack_and_the_commit_prints_once():
    clock, out = FakeClock(), io.StringIO()
    line = ShipTermLine("nas", out, clock, columns=100)
    for i in range(31):
        clock.t = i * 0.1
        line(i * MB, 30 * MB)
    for _ in range(3):  # ship_sender: the last chunk's ack, the file's, the commit's
        clock.t += 0.01
        line(30 * MB, 30 * MB)
    assert out.getvalue().count("Shipped") == 1 and out.getvalue().count("\n") == 1
    assert "Shipped 30 MB \u00b7 10.0 MB/s" in out.getvalue()
