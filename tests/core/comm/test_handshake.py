"""Joining the data plane: wrong versions and strangers are refused, and never wedge a group."""

from __future__ import annotations

import struct
import threading
import time

import pytest
import torch
import zmq

from core.comm import wire
from core.comm.codec import PROTOCOL_VERSION, encode
from core.comm.group import CommGroup
from core.errors import PeerError, ProtocolError


def _raw_dealer(endpoint: str) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.rcvtimeo = 3000
    s.connect(endpoint)
    return ctx, s


def _hello(m: CommGroup, rank: int = 1, token: str | None = None) -> list:
    meta = {"rank": rank, "world_size": m.world_size, "pid": 1, "ring": "tcp://127.0.0.1:1",
            "token": m.endpoints["token"] if token is None else token}
    return [wire.pack(wire.Kind.HELLO), *encode("hello", meta)]


def test_peer_of_another_version_is_refused_naming_both():
    m = CommGroup.master(2)
    ctx, s = _raw_dealer(m.endpoints["star"])
    future = struct.pack("<2sBBIQ", b"TP", PROTOCOL_VERSION + 1, wire.Kind.HELLO, 0, 0)
    s.send_multipart([future, b"whatever version 2 sends"])
    with pytest.raises(PeerError, match=f"protocol {PROTOCOL_VERSION + 1}"):
        m.wait_ready(0.5)
    kind_frame, text = s.recv_multipart()
    assert wire.peek_kind(kind_frame) == wire.Kind.REFUSE
    assert (f"speaks protocol {PROTOCOL_VERSION} and refused a peer speaking protocol "
            f"{PROTOCOL_VERSION + 1}") in text.decode()
    s.close()
    ctx.term()
    m.close()


def test_worker_refuses_endpoints_of_another_version():
    m = CommGroup.master(2)
    ep = dict(m.endpoints, protocol=PROTOCOL_VERSION + 1)
    with pytest.raises(ProtocolError, match=f"peer speaks protocol {PROTOCOL_VERSION + 1}, we "
                                             f"speak {PROTOCOL_VERSION}"):
        CommGroup.worker(1, 2, ep, join_timeout=1)
    m.close()


def test_strangers_are_refused_then_the_real_worker_joins():
    m = CommGroup.master(2, op_timeout=5)
    ctx, s = _raw_dealer(m.endpoints["star"])
    s.send_multipart(_hello(m, token="0" * 32))  # wrong token
    s.send_multipart([b"GET / HTTP/1.0\r\n\r\n"])  # not our protocol at all
    s.send_multipart(_hello(m, rank=5))  # right token, impossible rank
    ready = threading.Thread(target=m.wait_ready, args=(10,))
    ready.start()
    # rank 0 answers both bad hellos before the real worker even exists
    refusals = [s.recv_multipart()[1].decode() for _ in range(2)]
    assert any("session token" in r for r in refusals)
    assert any("not a worker rank" in r for r in refusals)
    w = CommGroup.worker(1, 2, m.endpoints, op_timeout=5)
    ready.join()

    # garbage from the stranger during allreduces is dropped, sums stay right
    stop = threading.Event()

    def spam() -> None:
        while not stop.is_set():
            s.send_multipart([wire.pack(wire.Kind.PARTIAL, 1, 8), b"\xff" * 8])
            s.send_multipart([b"\x00" * 3])
            time.sleep(0.001)

    spammer = threading.Thread(target=spam)
    spammer.start()
    th = threading.Thread(target=lambda: [w.allreduce_(torch.full((1, 2), 2.0))
                                          for _ in range(20)])
    th.start()
    for _ in range(20):
        t = m.allreduce_(torch.full((1, 2), 1.0))
        assert torch.equal(t, torch.full((1, 2), 3.0))
    th.join()
    stop.set()
    spammer.join()
    assert m.dropped > 0
    s.close()
    ctx.term()
    m.close()
    w.close()


def test_duplicate_rank_is_refused():
    m = CommGroup.master(3)
    ctx, s = _raw_dealer(m.endpoints["star"])
    s.send_multipart(_hello(m, rank=1))  # someone holding the token took rank 1 first
    errors: list = []

    def second_rank_1() -> None:
        try:
            CommGroup.worker(1, 3, m.endpoints, join_timeout=10)
        except Exception as e:  # collected for the assert below
            errors.append(e)

    ready: list = []

    def wait_ready() -> None:
        try:
            m.wait_ready(3.0)
        except PeerError as e:
            ready.append(e)

    waiter = threading.Thread(target=wait_ready)
    waiter.start()
    deadline = time.monotonic() + 5  # rank 0 admits the first rank 1 before the second exists
    while 1 not in m._p.ident_of and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 1 in m._p.ident_of
    th = threading.Thread(target=second_rank_1)
    th.start()
    waiter.join()
    th.join()
    assert ready and "rank 2 did not join" in str(ready[0])
    assert isinstance(errors[0], ProtocolError)
    assert "Rank 1 has already joined" in str(errors[0])
    s.close()
    ctx.term()
    m.close()


def test_missing_worker_times_out_with_its_rank():
    m = CommGroup.master(3)
    t0 = time.monotonic()
    with pytest.raises(PeerError, match="ranks 1, 2 did not join within 0.3 s"):
        m.wait_ready(0.3)
    assert time.monotonic() - t0 < 1.5
    m.close()
