"""CURVE with a ZAP allow-list: only paired keys get through, unpairing is live."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from core.cluster.identity import Identity
from core.cluster.trust import TrustedPeer, TrustStore
from core.comm.curve import make_curve_client, make_curve_server, peer_key

WAIT_S = 5.0


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


class Server:
    """A CURVE ROUTER on loopback admitting the keys of a trust store."""

    def __init__(self, ctx: zmq.Context, identity: Identity, trust: TrustStore) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.guard = make_curve_server(self.sock, identity, trust.contains)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")

    def recv(self, timeout: float) -> list[zmq.Frame] | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return self.sock.recv_multipart(copy=False)

    def close(self) -> None:
        self.sock.close()
        self.guard.close()


@pytest.fixture
def setup(ctx: zmq.Context, tmp_path: Path) -> Iterator[tuple[Server, Identity, TrustStore]]:
    worker = Identity.generate("mini-pc")
    trust = TrustStore.open("master", tmp_path)
    server = Server(ctx, worker, trust)
    yield server, worker, trust
    server.close()


def _client(ctx: zmq.Context, port: int, me: Identity | None,
            server_key: str) -> tuple[zmq.Socket, zmq.Socket]:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if me is not None:
        make_curve_client(sock, me, server_key)
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED
                                  | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                  | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock, mon


def _handshake(mon: zmq.Socket) -> int:
    """The first handshake outcome the client saw."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if mon.poll(100):
            return recv_monitor_message(mon)["event"]
    raise AssertionError("no handshake outcome within the wait")


def _close(*socks: zmq.Socket) -> None:
    for s in socks:
        s.close(linger=0)


def _assert_refused(server: Server, sock: zmq.Socket, mon: zmq.Socket, payload: bytes) -> None:
    """The client's handshake fails authentication and the server gets nothing; closes both."""
    try:
        try:
            sock.send(payload, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # the refused handshake already dropped the connection: nothing queued
        assert _handshake(mon) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert server.recv(0.5) is None
    finally:
        _close(sock, mon)


def _trust(trust: TrustStore, ident: Identity) -> None:
    trust.add(TrustedPeer(ident.public_key, ident.name, "master"))


def test_paired_client_exchanges_messages(ctx: zmq.Context, setup) -> None:
    server, worker, trust = setup
    laptop = Identity.generate("laptop")
    _trust(trust, laptop)
    sock, mon = _client(ctx, server.port, laptop, worker.public_key)
    try:
        assert _handshake(mon) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        sock.send(b"hello")
        frames = server.recv(WAIT_S)
        assert frames is not None and frames[1].bytes == b"hello"
        assert peer_key(frames[1]) == laptop.public_key
        server.sock.send_multipart([frames[0].bytes, b"welcome"])
        assert sock.poll(int(WAIT_S * 1000)) and sock.recv() == b"welcome"
    finally:
        _close(sock, mon)


def test_unknown_key_gets_nothing_through(ctx: zmq.Context, setup) -> None:
    server, worker, trust = setup
    _trust(trust, Identity.generate("laptop"))
    stranger = Identity.generate("stranger")
    sock, mon = _client(ctx, server.port, stranger, worker.public_key)
    _assert_refused(server, sock, mon, b"let me in")


def test_plaintext_client_gets_nothing_through(ctx: zmq.Context, setup) -> None:
    server, worker, _trust_store = setup
    sock, mon = _client(ctx, server.port, None, worker.public_key)
    try:
        sock.send(b"let me in", flags=zmq.NOBLOCK)
        assert _handshake(mon) != zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert server.recv(0.5) is None
    finally:
        _close(sock, mon)


def test_client_with_wrong_server_key_gets_nothing_through(ctx: zmq.Context, setup) -> None:
    server, _worker, trust = setup
    laptop = Identity.generate("laptop")
    _trust(trust, laptop)
    sock, mon = _client(ctx, server.port, laptop, Identity.generate("impostor").public_key)
    try:
        sock.send(b"hello", flags=zmq.NOBLOCK)
        assert server.recv(1.0) is None
    finally:
        _close(sock, mon)


def test_unpaired_key_is_refused_on_reconnect(ctx: zmq.Context, setup,
                                              tmp_path: Path) -> None:
    server, worker, trust = setup
    laptop = Identity.generate("laptop")
    _trust(trust, laptop)
    sock, mon = _client(ctx, server.port, laptop, worker.public_key)
    assert _handshake(mon) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    sock.send(b"one")
    assert server.recv(WAIT_S) is not None
    _close(sock, mon)
    # Unpair from another process's point of view: a second store on the same file.
    TrustStore.open("master", tmp_path).remove(laptop.public_key)
    sock, mon = _client(ctx, server.port, laptop, worker.public_key)
    _assert_refused(server, sock, mon, b"two")


def test_each_server_uses_its_own_allow_list_and_errors_fail_closed(ctx: zmq.Context) -> None:
    a_key, b_key = Identity.generate("a"), Identity.generate("b")
    laptop = Identity.generate("laptop")

    def explode(key: str) -> bool:
        raise RuntimeError("store unreadable")

    socks = []
    guards = []
    ports = []
    for ident, allow in ((a_key, lambda k: k == laptop.public_key), (b_key, explode)):
        s = ctx.socket(zmq.ROUTER)
        s.linger = 0
        guards.append(make_curve_server(s, ident, allow))
        ports.append(s.bind_to_random_port("tcp://127.0.0.1"))
        socks.append(s)
    try:
        c1, m1 = _client(ctx, ports[1], laptop, b_key.public_key)
        assert _handshake(m1) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        c2, m2 = _client(ctx, ports[0], laptop, a_key.public_key)
        assert _handshake(m2) == zmq.EVENT_HANDSHAKE_SUCCEEDED  # the handler survived
        _close(c1, m1, c2, m2)
    finally:
        for s in socks:
            s.close()
        for g in guards:
            g.close()


def test_without_a_zap_handler_curve_clients_are_refused(ctx: zmq.Context, setup) -> None:
    """If the authenticator is gone, the socket must not fall back to 'anyone with CURVE'."""
    server, worker, trust = setup
    laptop = Identity.generate("laptop")
    _trust(trust, laptop)
    server.guard.close()  # stops the context's only authenticator
    sock, mon = _client(ctx, server.port, laptop, worker.public_key)
    try:
        sock.send(b"hello", flags=zmq.NOBLOCK)
        assert server.recv(1.0) is None
        seen = []
        while mon.poll(0):
            seen.append(recv_monitor_message(mon)["event"])
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in seen
    finally:
        _close(sock, mon)
