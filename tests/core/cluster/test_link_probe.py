"""The planner's link probe (core/cluster/speeds.py, link_speeds) against fake workers on
real CURVE sockets: a burst that meets a passing slowdown is not what the link is priced
at, a link that is slow all along is, and the first echoes of a burst are left out.

Each fake worker answers an echo after a delay it picks by the echo's number, standing for
a machine whose answers slow down for a while (host contention on the test VM) and then
recover."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest

from core.cluster import speeds
from tests.fixtures.fake_worker import EchoWorker, FakeStar

SLOW_S = 0.006
PER_BURST = speeds.WARM_ECHOES + speeds.RTT_SAMPLES


def delayed(master_key: str, delay: Callable[[int], float]) -> EchoWorker:
    """An echo worker answering its n-th echo (from 0) after delay(n) seconds."""
    count = itertools.count()
    return EchoWorker(master_key, lambda: time.sleep(delay(next(count))))


@pytest.fixture
def links():
    """links(*delays) -> a link to a `delayed` echo worker for each delay function."""
    fakes = FakeStar()
    yield lambda *delays: [fakes.link(delayed(fakes.master.public_key, d))
                           for d in delays]
    fakes.close()


def test_a_burst_that_meets_a_passing_slowdown_is_not_what_the_link_is_priced_at(links):
    # the whole first burst (and its warm-up) is slow, the later ones are not
    got = speeds.link_speeds(links(lambda n: SLOW_S if n < PER_BURST else 0.0))
    assert len(got[0].rtt_ms) == speeds.RTT_SAMPLES
    assert got[0].median_ms < SLOW_S * 1e3 / 2


def test_a_link_slow_all_along_is_priced_slow(links):
    got = speeds.link_speeds(links(lambda n: SLOW_S, lambda n: 0.0))
    assert got[0].median_ms > SLOW_S * 1e3
    assert got[1].median_ms < SLOW_S * 1e3 / 2
    assert got[0].mbps is not None and got[0].mbps > 0


def test_the_first_echoes_of_a_burst_are_left_out(links):
    # each burst starts slow for its warm-up echoes only: a machine waking up
    got = speeds.link_speeds(links(lambda n: SLOW_S if n % PER_BURST < speeds.WARM_ECHOES
                                   else 0.0), bursts=1)
    assert max(got[0].rtt_ms) < SLOW_S * 1e3


def test_a_link_that_never_answers_has_no_round_trips(links, monkeypatch):
    monkeypatch.setattr(speeds, "_echo", lambda link, t: None)
    assert speeds.link_speeds(links(lambda n: 0.0), bursts=2)[0].rtt_ms == ()


def test_a_worker_that_stops_answering_is_asked_one_echo_not_seventy_five(links):
    # each echo waits 5 s for its answer: asked every echo of every burst, a device that
    # went silent (or a hostile one) would hold the session's start for over six minutes
    asked = itertools.count()

    def never(n: int) -> float:
        next(asked)
        return 3600.0  # the fake's serving thread sleeps: no echo is answered

    ok = lambda n: 0.0  # noqa: E731
    got = speeds.link_speeds(links(never, ok))
    assert next(asked) == 1  # the one echo it got before the probe gave up on it
    assert got[0].rtt_ms == () and got[0].mbps is None
    assert len(got[1].rtt_ms) == speeds.RTT_SAMPLES  # the other link is probed as usual
