"""CommGroup over real sockets: rank 0 here, workers in spawned processes."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from core.comm.group import CommGroup
from core.errors import PeerError
from tests.core.comm.ranks import SHAPES, int_tensor, rank_tensor


def _collect(out, n: int) -> list:
    return [out.get(timeout=60) for _ in range(n)]


def _allreduce_round(g: CommGroup, out, shape, algo: str, kind: str, seed: int = 0):
    ws = g.world_size
    g.broadcast_step({"op": "allreduce", "shape": list(shape), "algorithm": algo,
                      "kind": kind, "seed": seed})
    make = (lambda r: int_tensor(r, shape)) if kind == "int" else \
        (lambda r: rank_tensor(r, shape, seed))
    t = make(0)
    g.allreduce_(t, algo)
    results = {0: t}
    for rank, what, _meta, x in _collect(out, ws - 1):
        assert what == "allreduce"
        results[rank] = x
    expected = make(0)
    for r in range(1, ws):
        expected = expected + make(r)  # rank order, as the star sums
    return results, expected


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_allreduce_star_and_ring_exact(cluster, world_size):
    g, out = cluster(world_size)
    assert g.local_links == list(range(1, world_size))  # worker processes on this machine
    for i, shape in enumerate(SHAPES):
        res, expected = _allreduce_round(g, out, shape, "star", "rand", seed=i)
        for r, t in res.items():
            # the star adds in rank order on rank 0 and ships that: bit-exact everywhere
            assert torch.equal(t, expected), f"rank {r} shape {shape}"
        ring, exact = _allreduce_round(g, out, shape, "ring", "int")
        for r, t in ring.items():
            assert torch.equal(t, exact), f"ring rank {r} shape {shape}"
        star, _ = _allreduce_round(g, out, shape, "star", "int")
        assert all(torch.equal(star[r], ring[r]) for r in range(world_size))
        rnd, expected = _allreduce_round(g, out, shape, "ring", "rand", seed=i)
        for t in rnd.values():
            torch.testing.assert_close(t, expected, rtol=1e-5, atol=1e-5)
            assert torch.equal(t, rnd[0])  # every rank ends with the same bits
    g.broadcast_step({"op": "stop"})


@pytest.mark.slow
def test_broadcast_step_meta_and_tensor(cluster):
    g, out = cluster(3)
    x = torch.arange(12, dtype=torch.float32).view(3, 4)
    g.broadcast_step({"op": "echo", "pos": 7, "nested": {"a": [1, 2]}}, x)
    g.broadcast_step({"op": "echo", "pos": 8}, None)
    got = _collect(out, 4)
    with_t = [e for e in got if e[2]["pos"] == 7]
    without = [e for e in got if e[2]["pos"] == 8]
    assert sorted(e[0] for e in with_t) == [1, 2]
    for _r, _w, meta, t in with_t:
        assert meta == {"op": "echo", "pos": 7, "nested": {"a": [1, 2]}}
        assert torch.equal(t, x)
    assert all(e[3] is None for e in without)
    g.broadcast_step({"op": "stop"})


@pytest.mark.slow
def test_peer_dying_mid_allreduce_raises_peer_error(cluster):
    g, out = cluster(3, op_timeout=5.0)
    g.broadcast_step({"op": "die"})  # both workers vanish instead of reducing
    t0 = time.monotonic()
    with pytest.raises(PeerError, match=r"rank [12]"):
        g.allreduce_(torch.ones(1, 576))
    assert time.monotonic() - t0 < 5.5
    with pytest.raises(PeerError, match="failed earlier"):
        g.allreduce_(torch.ones(1, 576))  # the group stays failed: rebuild it


def test_world_size_one_is_a_no_op():
    g = CommGroup.master(1)
    g.wait_ready(1)
    t = torch.ones(2, 3)
    assert g.allreduce_(t) is t and torch.equal(t, torch.ones(2, 3))
    g.broadcast_step({"op": "step", "pos": 0}, t)
    assert g.endpoints == {}
    g.close()


# -- in-process (threads) for the fast failure-path tests ------------------------------

def _threaded_pair(**kw):
    m = CommGroup.master(2, **kw)
    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault(
        "w", CommGroup.worker(1, 2, m.endpoints, op_timeout=kw.get("op_timeout", 60))))
    th.start()
    m.wait_ready(10)
    th.join()
    return m, box["w"]


def test_silent_peer_times_out_naming_the_rank():
    m, w = _threaded_pair(op_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(PeerError, match="rank 1 did not answer within 0.5 s"):
        m.allreduce_(torch.ones(1, 8))
    assert 0.4 < time.monotonic() - t0 < 2.0
    m.close()
    w.close()


def _assert_close_interrupts(g: CommGroup, call) -> None:
    """close() from another thread ends a waiting call(g) with PeerError within ~0.1 s."""
    errs: list = []

    def wait() -> None:
        try:
            call(g)
        except PeerError as e:
            errs.append(e)

    th = threading.Thread(target=wait)
    th.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    g.close()
    th.join(timeout=3)
    assert not th.is_alive() and errs
    assert time.monotonic() - t0 < 1.5


def test_close_interrupts_recv_step_without_hanging():
    m, w = _threaded_pair()
    _assert_close_interrupts(w, lambda g: g.recv_step(timeout=None))
    m.close()
    m.close()  # idempotent


def test_close_interrupts_a_fast_path_allreduce():
    m, w = _threaded_pair(op_timeout=30)
    assert m.local_links == [1]
    # the worker never sends its partial: rank 0 waits on its loopback TCP link
    _assert_close_interrupts(m, lambda g: g.allreduce_(torch.ones(1, 8)))
    w.close()


def test_recv_step_timeout_keeps_the_group_usable():
    m, w = _threaded_pair()
    from core.comm.broadcast import StepTimeout
    with pytest.raises(StepTimeout):
        w.recv_step(timeout=0.2)
    m.broadcast_step({"op": "step", "pos": 1}, torch.ones(2))
    meta, x = w.recv_step(timeout=5)
    assert meta == {"op": "step", "pos": 1} and torch.equal(x, torch.ones(2))
    m.close()
    w.close()
