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


STRANGER = r"""
import struct, sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.connect(f"tcp://127.0.0.1:{sys.argv[1]}")
print("connected", flush=True)
for _ in range(200):  # a hold of 1e300 s, several frames, and more than a frame's bytes
    s.send_multipart([struct.pack("<d", 1e300), b"x" * 64])
    s.send(b"y" * 100_000)
s.close(1000)
"""


def test_another_local_process_on_the_echo_port_cannot_stall_or_break_it():
    """The echo's port is on loopback, where any local user can connect: what a stranger
    sends there neither sets how long the echo waits nor stops it answering us."""
    import subprocess
    import sys

    with _FrameEcho() as echo:
        echo.round_trip(0.0)
        attacker = subprocess.Popen([sys.executable, "-c", STRANGER, str(echo.port)], text=True,
                                    stdout=subprocess.PIPE)
        assert attacker.stdout.readline().strip() == "connected"
        t0 = time.perf_counter()
        got = [echo.round_trip(0.001) for _ in range(20)]
        assert attacker.wait(30) == 0
        assert time.perf_counter() - t0 < 10  # never held for what the stranger asked
    assert all(0 < x < 5 for x in got)
