"""The master's heartbeat thread to a worker never dies silently (issue 13, item 4).

A fake worker (a real CURVE ROUTER socket in a thread) answers the real WorkerLink's
pings with malformed pongs, then good ones; and a listener that raises. Once, a TypeError
out of the codec, or the listener's own exception, ended the heartbeat thread: the link
then never noticed the worker dying or coming back.
"""

from __future__ import annotations

import time

import msgpack

from core.cluster.identity import Identity
from core.cluster.worker_link import WorkerLink
from core.comm.codec import encode
from tests.fixtures.fake_worker import FakeWorker

BAD_PONGS = [
    [msgpack.packb({"v": 1, "op": "pong", "meta": {}, "tensors": [], "zz": 1, b"x": 1},
                   use_bin_type=True)],
    [msgpack.packb({"v": 1, "op": "pong", "meta": {},
                    "tensors": [{"dtype": "uint8", "shape": [0, 2**64 - 1]}]}), b""],
    [b"\x93\x01\x02"],
]


class BadPongs:
    """A fake worker answering each ping: the first len(bad) with bad[i], then good pongs
    (echoing t)."""

    def __init__(self, master_key: str, bad: list[list[bytes]]):
        self.bad = list(bad)
        self.pings = 0
        self.fake = FakeWorker(master_key, self._answer)
        self.identity, self.ctl = self.fake.identity, self.fake.ctl

    def _answer(self, ident: bytes, msg) -> None:
        self.pings += 1
        frames = self.bad.pop(0) if self.bad else encode(
            "pong", {"t": msg.meta["t"], "ranks": {"1": -1}, "why": {}})
        self.ctl.sock.send_multipart([ident, *frames])

    def close(self) -> None:
        self.fake.close()


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_heartbeat_survives_malformed_pongs_and_hears_the_good_ones():
    master = Identity.generate("master")
    worker = BadPongs(master.public_key, BAD_PONGS)
    link = WorkerLink("fake", worker.ctl.endpoint, worker.identity.public_key, master)
    try:
        assert _wait(lambda: worker.pings > len(BAD_PONGS) + 1, 15), worker.pings
        assert link._thread.is_alive()
        assert _wait(lambda: link.ranks == {"1": -1}, 5)
        assert link.dead is None and link.rtt_ms
    finally:
        link.close()
        worker.close()


def test_heartbeat_survives_a_listener_that_raises(caplog):
    master = Identity.generate("master")
    worker = BadPongs(master.public_key, [])
    calls = []

    def on_back(link):
        calls.append(link)
        raise RuntimeError("a bug in the listener")

    link = WorkerLink("fake", worker.ctl.endpoint, worker.identity.public_key, master,
                      on_back=on_back, dead="did not answer")
    try:
        assert _wait(lambda: calls, 10)
        n = worker.pings
        assert _wait(lambda: worker.pings >= n + 2, 10), "the heartbeat stopped"
        assert link._thread.is_alive() and link.dead is None
        assert any("heartbeat" in r.getMessage() for r in caplog.records)
    finally:
        link.close()
        worker.close()
