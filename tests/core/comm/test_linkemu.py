"""Link emulation: the delay is really added (lower-bound checks only: CI machines are slow)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from core.comm.group import CommGroup
from core.comm.linkemu import LinkEmulation, precise_sleep


def test_cost_model():
    link = LinkEmulation(delay_ms=2.0, bandwidth_mbps=8.0)
    assert link.cost_s(1000) == pytest.approx(0.002 + 0.001)
    assert LinkEmulation().cost_s(10**6) == 0.0
    with pytest.raises(ValueError):
        LinkEmulation(delay_ms=-1)
    with pytest.raises(ValueError):
        LinkEmulation(bandwidth_mbps=0)


def test_precise_sleep_is_a_lower_bound():
    for s in (0.0002, 0.001, 0.003):
        t0 = time.perf_counter()
        precise_sleep(s)
        assert time.perf_counter() - t0 >= s


def test_ping_with_5ms_link_takes_at_least_5ms():
    link = LinkEmulation(delay_ms=5.0)
    m = CommGroup.master(2, link=link)
    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault(
        "w", CommGroup.worker(1, 2, m.endpoints, link=link)))
    th.start()
    m.wait_ready(10)
    th.join()
    w = box["w"]
    assert m.local_links == [1]  # the emulated link is the fast loopback path
    th = threading.Thread(target=lambda: [w.allreduce_(torch.ones(1, 576)) for _ in range(3)])
    th.start()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        m.allreduce_(torch.ones(1, 576))
        times.append(time.perf_counter() - t0)
    th.join()
    # worker -> 0 and 0 -> worker each pay 5 ms; rank 0 sees at least its own send's delay
    assert min(times) >= 0.005
    m.close()
    w.close()
