"""measure_members: every device measured at once, then the links probed one at a time
with nothing else running (an echo queued behind a measurement child measures the wait).

The device and link measurements are stood in for here (their own tests run them for
real); what is checked is the order and the overlap of the calls."""

from __future__ import annotations

import threading
import time

from core.cluster import plan_devices
from core.cluster.measures import DeviceSpeed, LinkSpeed
from core.cluster.worker_spec import WorkerSpec


def test_links_are_probed_after_every_measurement_and_one_at_a_time(monkeypatch):
    lock = threading.Lock()
    measuring, probing, seen = [0], [0], []

    def slow_measure(name: str, secs: float) -> DeviceSpeed:
        with lock:
            measuring[0] += 1
        time.sleep(secs)
        with lock:
            measuring[0] -= 1
        return DeviceSpeed.from_dict({"read_gbps": {"q4_1": 5.0}})

    def probe(links) -> list[LinkSpeed]:
        out = []
        for link in links:
            with lock:
                probing[0] += 1
                seen.append((link, measuring[0], probing[0]))
            time.sleep(0.05)
            with lock:
                probing[0] -= 1
            out.append(LinkSpeed((0.4,)))
        return out

    monkeypatch.setattr(plan_devices, "local_speed",
                        lambda fresh, formats, wait: slow_measure("me", 0.4))
    monkeypatch.setattr(plan_devices, "worker_speed",
                        lambda link, fresh, formats, wait: slow_measure(link, 0.1))
    monkeypatch.setattr(plan_devices, "link_speeds", probe)
    workers = [(WorkerSpec(n, "tcp://127.0.0.1:1", "k" * 40, 2**30), n) for n in "bcd"]
    me, theirs = plan_devices.measure_members(2**30, workers, fresh=True)
    assert [m.name for m in theirs] == ["b", "c", "d"]
    assert all(m.link is not None and m.link.median_ms == 0.4 for m in theirs)
    assert [s[0] for s in seen] == ["b", "c", "d"]
    assert all(busy == 0 for _, busy, _ in seen)  # no measurement ran during a probe
    assert all(n == 1 for _, _, n in seen)  # nor another probe


def test_every_set_of_two_or_more_workers_is_probed_and_past_four_only_all_of_them(monkeypatch):
    probed = []
    monkeypatch.setattr(plan_devices, "group_extra_ms",
                        lambda links: probed.append("".join(links)) or len(links) / 10)

    def workers(names: str) -> list:
        return [(WorkerSpec(n, "tcp://127.0.0.1:1", "k" * 40, 2**30), n) for n in names]

    groups = plan_devices.measure_groups(workers("bcd"))
    assert probed == ["bc", "bd", "cd", "bcd"]
    assert groups[frozenset("bcd")] == 0.3 and groups[frozenset("bd")] == 0.2
    probed.clear()
    assert plan_devices.measure_groups(workers("bcdef")) == {frozenset("bcdef"): 0.5}
    assert probed == ["bcdef"]
    assert plan_devices.measure_groups(workers("b")) == {}
