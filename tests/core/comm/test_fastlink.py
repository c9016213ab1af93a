"""The loopback TCP fast path: chosen per link, token-gated, strangers never disturb it."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
import torch

from core.comm import fastlink, wire
from core.comm.codec import PROTOCOL_VERSION
from core.comm.group import CommGroup
from core.errors import PeerError, ProtocolError
from tests.core.comm.ranks import int_tensor


def _join_threads(m: CommGroup, endpoints: list[dict], **kw) -> list[CommGroup]:
    """Workers 1..n in threads, worker r joining with endpoints[r - 1]."""
    box: dict[int, CommGroup] = {}
    ths = [threading.Thread(target=lambda r=r, ep=ep: box.setdefault(
        r, CommGroup.worker(r, m.world_size, ep, **kw))) for r, ep in enumerate(endpoints, 1)]
    for th in ths:
        th.start()
    m.wait_ready(20)
    for th in ths:
        th.join()
    return [box[r] for r in range(1, m.world_size)]


def _reduce_all(groups: list[CommGroup], shape: tuple[int, ...], times: int = 5) -> list:
    """Every group allreduces int_tensor(rank) `times` times; rank 0's results."""
    results: list = []

    def run(g: CommGroup) -> None:
        for _ in range(times):
            t = g.allreduce_(int_tensor(g.rank, shape))
            if g.rank == 0:
                results.append(t)

    ths = [threading.Thread(target=run, args=(g,)) for g in groups[1:]]
    for th in ths:
        th.start()
    run(groups[0])
    for th in ths:
        th.join()
    return results


def _expected(world_size: int, shape: tuple[int, ...]) -> torch.Tensor:
    return sum(int_tensor(r, shape) for r in range(world_size))


def test_local_workers_use_the_fast_path_and_sums_are_exact():
    m = CommGroup.master(3, op_timeout=10)
    ws = _join_threads(m, [m.endpoints, m.endpoints], op_timeout=10)
    assert m.local_links == [1, 2] and ws[0].local_links == [0]
    for shape in [(1, 576), (7, 2048), (1, 1)]:
        for t in _reduce_all([m, *ws], shape):
            assert torch.equal(t, _expected(3, shape))
    for g in (m, *ws):
        g.close()


def test_mixed_fast_and_zmq_links_in_one_group():
    m = CommGroup.master(3, op_timeout=10)
    remote = {k: v for k, v in m.endpoints.items() if k != "fast"}  # as if on another device
    other_machine = dict(m.endpoints, fast=dict(m.endpoints["fast"], machine="elsewhere"))
    ws = _join_threads(m, [remote, other_machine], op_timeout=10)
    assert m.local_links == [] and ws[1].local_links == []
    m.close()
    for g in ws:
        g.close()

    m = CommGroup.master(3, op_timeout=10)
    remote = {k: v for k, v in m.endpoints.items() if k != "fast"}
    ws = _join_threads(m, [m.endpoints, remote], op_timeout=10)
    assert m.local_links == [1]
    for t in _reduce_all([m, *ws], (2, 576)):
        assert torch.equal(t, _expected(3, (2, 576)))
    for g in (m, *ws):
        g.close()


def test_transport_zmq_forces_zeromq():
    m = CommGroup.master(2, transport="zmq")
    assert "fast" not in m.endpoints
    (w,) = _join_threads(m, [m.endpoints])
    assert m.local_links == [] and w.local_links == []
    (t,) = _reduce_all([m, w], (1, 8), times=1)
    assert torch.equal(t, _expected(2, (1, 8)))
    m.close()
    w.close()
    with pytest.raises(ValueError, match="transport"):
        CommGroup.master(2, transport="udp")


def _hello(rank: int, mac: bytes, kind: int = wire.Kind.FAST_HELLO) -> bytes:
    return struct.pack("<2sBBIQ", b"TP", PROTOCOL_VERSION, kind, rank, len(mac)) + mac


def test_strangers_on_the_fast_port_are_dropped_and_the_port_closes():
    m = CommGroup.master(2, op_timeout=10)
    port = m.endpoints["fast"]["port"]
    token = m.endpoints["token"]
    strangers = []
    for payload in [b"GET / HTTP/1.0\r\n\r\n" * 4,  # not our protocol
                    _hello(1, b"\x00" * 32),  # a guessed token
                    _hello(1, fastlink.hello_mac("0" * 32, 1)),  # another group's token
                    _hello(5, fastlink.hello_mac(token, 5)),  # right token, no such rank
                    _hello(1, fastlink.hello_mac(token, 1), kind=wire.Kind.PARTIAL),
                    b"\x80\x04\x95pickle" + bytes(40),
                    b""]:  # connects and says nothing
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(payload)
        strangers.append(s)
    (w,) = _join_threads(m, [m.endpoints], op_timeout=10)
    assert m.local_links == [1]
    assert m.dropped >= 6  # the silent one may still be pending when set-up ends
    for t in _reduce_all([m, w], (1, 576)):
        assert torch.equal(t, _expected(2, (1, 576)))
    with pytest.raises(OSError):  # set-up done: the listener is gone
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    for s in strangers:
        s.close()
    m.close()
    w.close()


def test_fast_hello_without_the_token_never_joins():
    # a rank that passed the ZeroMQ hello but cannot prove the token on the fast port
    srv = fastlink.listen()
    th = threading.Thread(target=lambda: socket.create_connection(
        ("127.0.0.1", srv.getsockname()[1])).sendall(_hello(1, fastlink.hello_mac("x", 1))))
    th.start()
    with pytest.raises(PeerError, match="rank 1 did not open a local link"):
        fastlink.accept(srv, {1}, "a" * 32, None, 5, time.monotonic() + 0.5,
                        threading.Event())
    th.join()
    srv.close()


# Started as root and dropped to another uid once imported (the interpreter lives under
# /root, which other users cannot read): the socket is that user's.
_OTHER_USER = """
import encodings.idna, os, socket, sys, time  # idna: connect() encodes the host with it
os.setgroups([]); os.setgid(65534); os.setuid(65534)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(bytes.fromhex(sys.argv[2]))
print("sent", flush=True)
time.sleep(10)
"""


def test_another_user_with_the_token_gets_no_fast_link():
    """A process of another uid that somehow holds the token (and so the right HMAC)
    connects first; rank 0 admits only the same-user rank. Once the HMAC alone decided."""
    if os.geteuid() != 0 or not os.path.exists("/proc/net/tcp"):
        pytest.skip("needs root (to run a process as another uid) and /proc/net/tcp")
    srv = fastlink.listen()
    port = srv.getsockname()[1]
    token = "b" * 32
    spy = subprocess.Popen([sys.executable, "-c", _OTHER_USER, str(port),
                            _hello(1, fastlink.hello_mac(token, 1)).hex()],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert spy.stdout.readline().strip() == "sent"
        time.sleep(0.2)  # its hello is in before ours
        box = {}
        th = threading.Thread(target=lambda: box.setdefault("w", fastlink.connect(
            port, 1, token, None, 5, 5)))
        th.start()
        links, dropped = fastlink.accept(srv, {1}, token, None, 5, time.monotonic() + 5,
                                         threading.Event())
        th.join()
        assert links[1].sock.getpeername() == box["w"].sock.getsockname()
        assert dropped == 1
        links[1].close()
        box["w"].close()
    finally:
        spy.kill()
        spy.wait()
        srv.close()


def test_out_of_step_header_on_the_fast_path_is_a_protocol_error():
    m = CommGroup.master(2, op_timeout=5)
    (w,) = _join_threads(m, [m.endpoints], op_timeout=5)
    w._p.seq += 7  # the worker believes it is at another allreduce

    def worker() -> None:
        try:
            w.allreduce_(torch.ones(1, 16))
        except PeerError:
            pass  # rank 0 gave up on us

    th = threading.Thread(target=worker)
    th.start()
    with pytest.raises(ProtocolError, match="out of step"):
        m.allreduce_(torch.ones(1, 16))
    m.close()
    th.join()
    w.close()

