"""Pairing over loopback: SPAKE2 + key confirmation, tries, expiry, hostile input."""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from core.cluster import pairing_code
from core.cluster.pairing import PairedPeer, PairingError, PairingServer, pair_with, query_info
from core.cluster.trust import TrustedPeer
from core.comm.codec import PROTOCOL_VERSION, decode, encode
from tests.core.cluster.devices import Device, make_device

ANY_OP = {"info", "challenge", "paired", "refused"}


@pytest.fixture
def worker(tmp_path: Path) -> Device:
    return make_device(tmp_path, "mini-pc", "master")


@pytest.fixture
def master(tmp_path: Path) -> Device:
    return make_device(tmp_path, "laptop", "worker")


class Recorder:
    def __init__(self) -> None:
        self.codes: list[str] = []
        self.paired: list[TrustedPeer] = []


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def server(worker: Device, rec: Recorder) -> Iterator[PairingServer]:
    s = PairingServer(worker.identity, worker.trust, "127.0.0.1", 0,
                      on_paired=rec.paired.append, on_new_code=rec.codes.append,
                      failure_delay=0.05, session_timeout=2.0)
    yield s
    s.close()


def _wrong(code: str) -> str:
    digits = pairing_code.normalize(code)
    assert digits is not None
    return f"{(int(digits) + 1) % 10 ** 6:06d}"


class Dealer:
    """A raw client speaking whatever we make it speak."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)

    def ask(self, frames: list[bytes], timeout: float = 3.0) -> list[bytes]:
        self.sock.send_multipart(frames)
        assert self.sock.poll(int(timeout * 1000)), "no answer"
        return self.sock.recv_multipart()

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


# ---------------------------------------------------------------- the happy path


def test_right_code_pairs_and_both_sides_trust_each_other(
        server: PairingServer, worker: Device, master: Device, rec: Recorder) -> None:
    first_code = server.code
    peer = pair_with(server.endpoint, first_code, master.identity, 5.0, trust=master.trust)
    assert peer == PairedPeer("mini-pc", worker.identity.public_key, server.endpoint)
    assert peer.fingerprint == worker.identity.fingerprint
    assert master.trust.contains(worker.identity.public_key)
    stored = worker.trust.get(master.identity.public_key)
    assert stored is not None and stored.name == "laptop" and stored.role == "master"
    assert master.trust.get(worker.identity.public_key).address == server.endpoint
    assert [p.public_key for p in rec.paired] == [master.identity.public_key]
    # A code pairs once: it is retired and the console is told the new one.
    assert server.code != first_code and rec.codes == [server.code]
    with pytest.raises(PairingError, match=r"refused the pairing code \(2 tries left\)"):
        pair_with(server.endpoint, first_code, master.identity, 5.0, trust=None)


def test_code_may_be_typed_without_dash(server: PairingServer, master: Device) -> None:
    typed = server.code.replace("-", " ")
    assert pair_with(server.endpoint, typed, master.identity, 5.0, trust=master.trust).name \
        == "mini-pc"


# ---------------------------------------------------------------- wrong codes


def test_wrong_codes_count_down_then_the_code_expires(
        server: PairingServer, worker: Device, master: Device, rec: Recorder) -> None:
    code = server.code
    msgs = []
    for _ in range(3):
        with pytest.raises(PairingError) as e:
            pair_with(server.endpoint, _wrong(code), master.identity, 5.0, trust=master.trust)
        msgs.append(str(e.value))
    assert msgs == [
        "peer 'mini-pc' refused the pairing code (2 tries left).",
        "peer 'mini-pc' refused the pairing code (1 try left).",
        "peer 'mini-pc' refused the pairing code: the code has expired, the worker shows a "
        "new one.",
    ]
    assert len(rec.codes) == 1 and rec.codes[0] == server.code != code
    assert worker.trust.list() == [] and master.trust.list() == []
    # The old code is dead (and counts as a try on the new one); the new one works.
    with pytest.raises(PairingError, match=r"\(2 tries left\)"):
        pair_with(server.endpoint, code, master.identity, 5.0, trust=master.trust)
    pair_with(server.endpoint, server.code, master.identity, 5.0, trust=master.trust)
    assert worker.trust.contains(master.identity.public_key)


def test_wrong_code_answer_is_delayed(worker: Device, master: Device) -> None:
    with PairingServer(worker.identity, worker.trust, failure_delay=0.6) as s:
        t0 = time.monotonic()
        with pytest.raises(PairingError, match="2 tries left"):
            pair_with(s.endpoint, _wrong(s.code), master.identity, 5.0, trust=None)
        assert time.monotonic() - t0 >= 0.6


def test_the_code_never_crosses_the_wire(server: PairingServer, master: Device) -> None:
    code = server.code
    wrong = _wrong(code)
    with TapProxy(server.port) as tap:
        endpoint = f"tcp://127.0.0.1:{tap.port}"
        with pytest.raises(PairingError):
            pair_with(endpoint, wrong, master.identity, 5.0, trust=None)
        pair_with(endpoint, code, master.identity, 5.0, trust=master.trust)
        wire = tap.bytes()
    # The capture did see the exchange (so the test can fail) ...
    assert b"laptop" in wire and master.identity.public_key.encode() in wire
    # ... but no form of either code.
    for c in (code, wrong):
        digits = pairing_code.normalize(c)
        assert digits is not None
        for form in (digits, f"{digits[:3]}-{digits[3:]}", f"{digits[:3]} {digits[3:]}"):
            assert form.encode() not in wire
        assert int(digits).to_bytes(4, "big") not in wire


# ---------------------------------------------------------------- versions


def _raw_header(v: int, op: str, meta: dict) -> bytes:
    return msgpack.packb({"v": v, "op": op, "meta": meta, "tensors": []}, use_bin_type=True)


def test_worker_refuses_another_protocol_version_naming_both(server: PairingServer,
                                                              master: Device) -> None:
    d = Dealer(server.endpoint)
    try:
        reply = decode(d.ask([_raw_header(PROTOCOL_VERSION + 98, "hello", {})]), ANY_OP)
    finally:
        d.close()
    assert reply.op == "refused" and reply.meta["reason"] == "version"
    assert reply.meta["peer_version"] == PROTOCOL_VERSION + 98
    assert reply.meta["version"] == PROTOCOL_VERSION
    # Still serving.
    pair_with(server.endpoint, server.code, master.identity, 5.0, trust=master.trust)


def test_master_names_both_versions_when_the_worker_differs(master: Device) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    other = PROTOCOL_VERSION + 1

    def fake_worker() -> None:
        if router.poll(5000):
            rid, *_ = router.recv_multipart()
            router.send_multipart([rid, _raw_header(other, "refused", {"reason": "version"})])

    t = threading.Thread(target=fake_worker)
    t.start()
    try:
        with pytest.raises(PairingError, match=rf"speaks protocol {other}, this device speaks "
                                               rf"{PROTOCOL_VERSION}"):
            pair_with(f"tcp://127.0.0.1:{port}", "123-456", master.identity, 5.0, trust=None)
    finally:
        t.join()
        router.close()
        ctx.term()


# ---------------------------------------------------------------- hostile input


def test_garbage_and_pickles_leave_the_server_up(server: PairingServer, master: Device,
                                                 tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # would create `marker` if anyone unpickled it
            return (os.mkdir, (str(marker),))

    evil = pickle.dumps(Evil())
    # Raw TCP: not even ZMTP.
    for payload in (os.urandom(4096), evil, b"\xff" * 10 + b"\x00" * 100):
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
            s.sendall(payload)
    # Valid ZMTP carrying nonsense.
    d = Dealer(server.endpoint)
    try:
        nonsense = [
            [evil], [os.urandom(64)], [b""], [msgpack.packb([1, 2, 3])],
            [msgpack.packb({"v": PROTOCOL_VERSION, "op": "x", "meta": {},
                            "tensors": [{"dtype": "object", "shape": [1]}]})],
            [msgpack.packb(msgpack.ExtType(1, evil))],
            [_raw_header(PROTOCOL_VERSION, "format_disk", {})],
            [_raw_header(PROTOCOL_VERSION, "hello", {"name": 5, "pake": "x"})],
            [_raw_header(PROTOCOL_VERSION, "hello", {"name": "x", "pake": b"B" + b"\0" * 32})],
            [_raw_header(PROTOCOL_VERSION, "confirm", {"public_key": "k", "mac": b""})],
            [*encode("info"), b"extra frame"],
        ]
        for frames in nonsense:
            reply = decode(d.ask(frames), ANY_OP)
            assert reply.op == "refused", frames
            assert reply.meta["reason"] in ("bad_request", "no_session"), reply.meta
        # A frame over the transport cap: libzmq drops that connection, nothing else.
        d.sock.send(b"\0" * 100_000)
    finally:
        d.close()
    assert not marker.exists()
    assert query_info(server.endpoint, 3.0)["name"] == "mini-pc"
    # None of that counted as a guess.
    with pytest.raises(PairingError, match=r"\(2 tries left\)"):
        pair_with(server.endpoint, _wrong(server.code), master.identity, 5.0, trust=None)
    pair_with(server.endpoint, server.code, master.identity, 5.0, trust=master.trust)
    assert master.trust.list()


def test_one_attempt_in_flight(server: PairingServer, master: Device) -> None:
    """A second master is turned away while an exchange is open; it expires by itself."""
    d = Dealer(server.endpoint)
    try:
        pake = pairing_code.master_pake("000000")
        reply = decode(d.ask(encode("hello", {"name": "intruder", "pake": pake.start()})),
                       ANY_OP)
        assert reply.op == "challenge"
        with pytest.raises(PairingError, match="peer 'mini-pc' is busy"):
            pair_with(server.endpoint, server.code, master.identity, 5.0, trust=None)
        time.sleep(2.1)  # session_timeout of the fixture
        pair_with(server.endpoint, server.code, master.identity, 5.0, trust=master.trust)
    finally:
        d.close()


def test_a_worker_that_does_not_know_the_code_is_not_trusted(master: Device) -> None:
    """Mutual authentication: a fake worker answering 'paired' with its own MAC fails."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    fake = make_device(Path(master.data_dir).parent, "fake", "master").identity

    def fake_worker() -> None:
        pake = pairing_code.worker_pake("999999")
        msg_b = pake.start()
        assert router.poll(5000)
        rid, *frames = router.recv_multipart()
        hello = decode(frames, {"hello"})
        key = pake.finish(hello.meta["pake"])
        router.send_multipart([rid, *encode("challenge", {
            "name": "fake", "pake": msg_b, "public_key": fake.public_key})])
        assert router.poll(5000)
        rid, *frames = router.recv_multipart()
        confirm = decode(frames, {"confirm"})
        th = pairing_code.transcript(PROTOCOL_VERSION, "laptop", "fake", hello.meta["pake"],
                                     msg_b, confirm.meta["public_key"], fake.public_key)
        mac = pairing_code.confirmation(key, "worker", th)
        router.send_multipart([rid, *encode("paired", {"mac": mac})])

    t = threading.Thread(target=fake_worker)
    t.start()
    try:
        with pytest.raises(PairingError, match="could not prove it knows the pairing code"):
            pair_with(f"tcp://127.0.0.1:{port}", "123-456", master.identity, 5.0,
                      trust=master.trust)
    finally:
        t.join()
        router.close()
        ctx.term()
    assert master.trust.list() == []


# ---------------------------------------------------------------- user errors


@pytest.mark.parametrize("typed", ["12-34", "abc-def", "1234567", "", "１２３４５６"])
def test_malformed_code_is_refused_before_any_network(typed: str, master: Device) -> None:
    with pytest.raises(PairingError, match="type the 6 digits the worker shows"):
        pair_with("tcp://127.0.0.1:1", typed, master.identity, 0.1, trust=None)


def test_silence_times_out_with_a_clear_message(master: Device) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)  # accepts, never answers
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        t0 = time.monotonic()
        with pytest.raises(PairingError, match=r"no answer from .* within 0.3 s"):
            pair_with(f"tcp://127.0.0.1:{port}", "123-456", master.identity, 0.3, trust=None)
        assert time.monotonic() - t0 < 2
    finally:
        router.close()
        ctx.term()


def test_a_failing_callback_does_not_stop_the_server(worker: Device, master: Device) -> None:
    def boom(_: object) -> None:
        raise RuntimeError("console went away")

    with PairingServer(worker.identity, worker.trust, on_paired=boom, on_new_code=boom) as s:
        pair_with(s.endpoint, s.code, master.identity, 5.0, trust=master.trust)
        assert query_info(s.endpoint, 3.0)["paired"] == "1"


def test_new_codes_look_right() -> None:
    codes = {pairing_code.new_code() for _ in range(200)}
    assert all(len(c) == 7 and c[3] == "-" and pairing_code.normalize(c) for c in codes)
    assert len(codes) > 190  # from `secrets`, not a constant


# ---------------------------------------------------------------- a wire tap


class TapProxy:
    """TCP forwarder on 127.0.0.1 recording every byte in both directions."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                down, _ = self._listener.accept()
            except TimeoutError:
                continue
            up = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((down, up), (up, down)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        try:
            while not self._stop.is_set():
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                with self._lock:
                    self._buf += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def bytes(self) -> bytes:
        with self._lock:
            return bytes(self._buf)

    def __enter__(self) -> TapProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self._listener.close()


def test_port_in_use_is_a_clear_error(server: PairingServer, worker: Device) -> None:
    with pytest.raises(PairingError, match=rf"cannot listen for pairing on 127.0.0.1:"
                                           rf"{server.port} \(Address already in use\)"):
        PairingServer(worker.identity, worker.trust, "127.0.0.1", server.port)
