"""The planner's group probe (core/cluster/speeds.py, group_extra_ms) against workers on
real CURVE sockets: what answering together adds to a star's round trip.

Each fake worker answers `echo` after WORK_S of work; two that share one worker thread
(as two devices sharing a core answer one after the other) cost about one more WORK_S
together than alone, two with threads of their own cost nothing more."""

from __future__ import annotations

import threading
import time

import pytest

from core.cluster.speeds import group_extra_ms
from core.cluster.worker_link import WorkerLink, request_all
from tests.fixtures.fake_worker import EchoWorker, FakeStar

WORK_S = 0.004


def on_cpu(master_key: str, cpu: threading.Lock) -> EchoWorker:
    """An echo worker answering after WORK_S of work done holding `cpu` (a lock standing
    for the core it runs on)."""

    def work() -> None:
        with cpu:
            time.sleep(WORK_S)

    return EchoWorker(master_key, work)


@pytest.fixture
def star():
    """star(shared) -> two links to two echo workers, on one `cpu` or on one each."""
    fakes = FakeStar()

    def make(shared: bool) -> list[WorkerLink]:
        one = threading.Lock()
        return [fakes.link(on_cpu(fakes.master.public_key, one if shared else threading.Lock()))
                for _ in range(2)]

    yield make
    fakes.close()


def test_every_link_answers_a_request_sent_to_all_at_once(star):
    links = star(shared=False)
    import torch

    got = request_all(links, "echo", {"t": 1.5}, {"echo"}, timeout=5.0,
                      tensors=(torch.arange(7, dtype=torch.uint8),))
    assert [m.meta["t"] for m in got] == [1.5, 1.5]
    assert all(m.tensors[0].tolist() == list(range(7)) for m in got)


def test_workers_answering_one_after_the_other_cost_the_star_one_more_answer(star):
    extra = group_extra_ms(star(shared=True), rounds=10)
    assert WORK_S * 1e3 * 0.5 < extra < WORK_S * 1e3 * 3


def test_workers_answering_side_by_side_cost_the_star_nothing_more(star):
    assert group_extra_ms(star(shared=False), rounds=10) < WORK_S * 1e3 * 0.5



def test_a_worker_that_stops_answering_is_asked_one_echo_not_twenty():
    # each echo waits 5 s for its answer: 20 rounds of them would hold the start 100 s
    asked, fakes = [], FakeStar()
    try:
        ok = fakes.link(EchoWorker(fakes.master.public_key, lambda: None))
        silent = fakes.link(EchoWorker(fakes.master.public_key,
                                       lambda: asked.append(1) or time.sleep(3600)))
        assert group_extra_ms([ok, silent], rounds=20) == 0.0
        assert len(asked) == 1
    finally:
        fakes.close()
