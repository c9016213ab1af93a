"""The pairing port's frames and limits: the parser never holds more than a frame, a
connection is cut at its byte, frame, idle and lifetime limits, addresses are counted
(IPv6 by /64) and capped (the per-address counters alone: test_pairing_guard.py). Small
limits, an in-process server; the same attacks on a real worker with the real limits are
in test_pairing_attacks.py and test_pairing_crowd.py."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.cluster.pairing_guard import address_key
from core.cluster.pairing_server import PairingServer
from core.cluster.pairing_wire import (
    LENGTH,
    MAX_FRAME,
    FrameParser,
    FrameSocket,
    Limits,
    WireError,
    frame_length,
    pack,
    unpack,
)
from tests.core.cluster.devices import make_device


def test_pack_and_unpack_round_trip() -> None:
    frame = pack("hello", {"name": "laptop", "pake": b"\1" * 33})
    assert LENGTH.unpack(frame[:4])[0] == len(frame) - 4
    msg = unpack(frame[4:], frozenset({"hello"}))
    assert msg.op == "hello" and msg.meta == {"name": "laptop", "pake": b"\1" * 33}
    with pytest.raises(ValueError, match="over 4096"):
        pack("info", {"txt": {"x": "y" * MAX_FRAME}})


@pytest.mark.parametrize("prefix", [b"\0\0\0\0", LENGTH.pack(MAX_FRAME + 1), b"\xff" * 4,
                                    b"GET "])
def test_a_length_is_refused_before_anything_is_read(prefix: bytes) -> None:
    with pytest.raises(WireError, match="a pairing message holds 1 to 4096 bytes"):
        frame_length(prefix)
    p = FrameParser()
    assert p.want() == 4
    with pytest.raises(WireError):
        p.feed(prefix)


def test_the_parser_asks_for_one_frame_at_a_time() -> None:
    p = FrameParser()
    data = pack("info") + pack("info", {"a": 1})
    bodies = []
    while data:
        n = p.want()
        assert 0 < n <= MAX_FRAME
        chunk, data = data[:min(n, 3)], data[min(n, 3):]  # a byte trickle
        got = p.feed(chunk)
        if got is not None:
            bodies.append(unpack(got, frozenset({"info"})).meta)
    assert bodies == [{}, {"a": 1}]
    with pytest.raises(WireError, match="read past a frame"):
        FrameParser().feed(b"12345")


def test_the_parser_cuts_a_connection_at_its_byte_limit() -> None:
    p = FrameParser(Limits(conn_bytes=100))
    frame = pack("info", {"pad": "x" * 40})
    assert p.feed(frame[:4]) is None and p.feed(frame[4:]) is not None
    with pytest.raises(WireError, match="more than 100 bytes"):
        p.feed(frame[:4])
        p.feed(frame[4:])


def test_unpack_refuses_anything_but_plain_data() -> None:
    import msgpack

    ops = frozenset({"info"})
    for body, why in [
        (msgpack.packb({"v": 1, "op": "info", "meta": {"a": [[[1]]]}}), "not plain"),
        (msgpack.packb({"v": 1, "op": "info", "meta": [], "x": 1}), "unknown fields"),
        (msgpack.packb({"v": 1, "op": "nope", "meta": {}}), "unexpected"),
        (msgpack.packb({"v": 1, "op": "info", "meta": {1: 2}}, strict_types=False),
         "invalid msgpack"),
        (msgpack.packb(msgpack.ExtType(1, b"x")), "invalid msgpack"),
        (msgpack.packb({"op": "info"}), "no protocol version"),
        (b"\x92\x01", "invalid msgpack"),
    ]:
        with pytest.raises(WireError, match=why):
            unpack(body, ops)
    with pytest.raises(WireError) as e:
        unpack(msgpack.packb({"v": 7, "op": "info"}), ops)
    assert e.value.version == 7


def test_the_client_reader_is_bounded_by_bytes_and_deadline() -> None:
    a, b = socket.socketpair()
    with a, b:
        fs = FrameSocket(a, time.monotonic() + 5, Limits(conn_bytes=64))
        b.sendall(pack("info", {"x": "y" * 80}))
        with pytest.raises(WireError, match="more than 64 bytes"):
            fs.recv()
    a, b = socket.socketpair()
    with a, b:
        fs = FrameSocket(a, time.monotonic() + 0.2)
        b.sendall(b"\0\0")  # half a prefix, then silence
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            fs.recv()
        assert time.monotonic() - t0 < 1


def test_address_keys() -> None:
    assert address_key("192.168.1.7") == "192.168.1.7"
    assert address_key("::ffff:192.168.1.7") == "192.168.1.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") \
        == "2001:db8:1:2::/64"
    assert address_key("fe80::1%eth0") == "fe80::/64"


# ---------------------------------------------------------------- a server with small limits


SMALL = Limits(conn_bytes=2048, conn_frames=3, conn_seconds=1.5, idle_seconds=0.5,
               max_conns=4, max_conns_per_addr=2, conns_per_addr=1000)


@pytest.fixture
def small(tmp_path: Path) -> Iterator[PairingServer]:
    w = make_device(tmp_path, "mini-pc", "master")
    with PairingServer(w.identity, w.trust, limits=SMALL) as s:
        yield s


def _conn(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(3)
    s.connect(("127.0.0.1", port))
    return s


def _hung_up(s: socket.socket, within: float) -> float | None:
    """Seconds until the server closed `s` (reading and dropping what it sent), or None."""
    t0 = time.monotonic()
    s.settimeout(within)
    try:
        while s.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        return None
    return time.monotonic() - t0


def _wait(cond, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_idle_connections_are_dropped(small: PairingServer) -> None:
    s = _conn(small.port)
    with s:
        took = _hung_up(s, 3)
    assert took is not None and 0.4 < took < 3  # 0.5 s idle (3: a loaded test machine)


def test_a_trickle_is_cut_at_the_connection_lifetime(tmp_path) -> None:
    w = make_device(tmp_path, "mini-pc", "master")
    with PairingServer(w.identity, w.trust, limits=Limits(conn_seconds=1.5,
                                                          idle_seconds=30)) as server:
        _trickle(server)


def _trickle(small: PairingServer) -> None:
    s = _conn(small.port)
    with s:
        t0 = time.monotonic()
        s.sendall(LENGTH.pack(100))
        try:
            while time.monotonic() - t0 < 4:
                s.sendall(b"x")  # one byte every 0.3 s: never idle for long
                time.sleep(0.3)
        except OSError:
            pass
        assert _hung_up(s, 2) is not None
        assert 1.4 < time.monotonic() - t0 < 4


def test_too_many_frames_on_one_connection(small: PairingServer) -> None:
    s = _conn(small.port)
    with s:
        for _ in range(3):
            s.sendall(pack("info"))
        s.sendall(pack("info"))
        data = b""
        s.settimeout(3)
        while chunk := s.recv(4096):
            data += chunk
    assert data.count(b"\xa3txt") == 3 and b"too many messages on one connection" in data


def test_connections_are_capped_per_address_and_overall(tmp_path) -> None:
    w = make_device(tmp_path, "mini-pc", "master")
    caps = Limits(max_conns=4, max_conns_per_addr=2, idle_seconds=30, conn_seconds=30)
    with PairingServer(w.identity, w.trust, limits=caps) as server:
        _capped(server)


def _capped(small: PairingServer) -> None:
    held = [_conn(small.port) for _ in range(2)]
    third = _conn(small.port)  # over 2 per address: one refusal and goodbye
    third.settimeout(3)
    data = third.recv(4096)
    assert b"busy" in data and b"too many connections from your address" in data
    assert _hung_up(third, 2) is not None
    assert _wait(lambda: small.open_connections() == 2)
    # from other addresses up to 4 in all; a fifth evicts the oldest
    more = [_conn(small.port, f"127.0.0.{i}") for i in (2, 3, 4)]
    assert _wait(lambda: small.open_connections() == 4)
    assert _hung_up(held[0], 2) is not None  # the oldest went
    assert _wait(lambda: small.open_connections() == 4)  # (dropped just before the new one)
    for s in held + more + [third]:
        s.close()
    assert _wait(lambda: small.open_connections() == 0)
    assert small.guard.admit("127.0.0.1") is None  # the counts came back down


def test_a_huge_length_prefix_is_refused_at_once(small: PairingServer) -> None:
    s = _conn(small.port)
    with s:
        s.sendall(b"\xff\xff\xff\xff" + b"\0" * 1000)
        s.settimeout(3)
        data = s.recv(4096)
        assert b"announced a 4294967295-byte message" in data
        assert _hung_up(s, 2) is not None
