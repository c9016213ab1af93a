"""The waiting measurement on real threads and loopback sockets: the curve has a sane
point per gap, and the echo's holds are what the link emulation's sends wait."""

from __future__ import annotations

import math
import time

from core.cluster.measure_idle import _FrameEcho, resume_ms


def test_one_sane_point_per_gap_in_order():
    got = resume_ms(gaps_ms=(0.5, 2.0, 5.0), rounds=4)
    assert [g for g, _ in got] == [0.5, 2.0, 5.0]
    assert all(math.isfinite(x) and 0 <= x < 50 for _, x in got)


def test_each_message_of_the_echo_waits_its_hold_and_only_the_rest_is_returned():
    with _FrameEcho() as echo:
        echo.round_trip(0.0)
        t0 = time.perf_counter()
        beyond = echo.round_trip(0.004)
        total = time.perf_counter() - t0
    assert total >= 0.008  # our send's hold and the server's answer's
    assert 0 < beyond < total - 0.0075
