"""Pairing over loopback, in process: SPAKE2 + key confirmation, the pairing window and its
lock-out, per-connection sessions, hostile input. (Attacks on a real worker process are in
test_pairing_attacks.py; the wire format and its limits in test_pairing_wire.py.)"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from core.cluster import pairing_code
from core.cluster.pairing import PairedPeer, PairingError
from core.cluster.pairing_client import pair_with, query_info
from core.cluster.pairing_server import PairingServer
from core.cluster.pairing_window import PairingEvent, PairingGate
from core.cluster.pairing_wire import LENGTH, pack, unpack
from core.cluster.trust import TrustedPeer
from core.comm.codec import PROTOCOL_VERSION
from tests.core.cluster.devices import Device, make_device

ANY_OP = frozenset({"info", "challenge", "paired", "refused"})


@pytest.fixture
def worker(tmp_path: Path) -> Device:
    return make_device(tmp_path, "mini-pc", "master")


@pytest.fixture
def master(tmp_path: Path) -> Device:
    return make_device(tmp_path, "laptop", "worker")


class Recorder:
    def __init__(self) -> None:
        self.events: list[PairingEvent] = []
        self.paired: list[TrustedPeer] = []

    def kinds(self) -> list[str]:
        return [e.kind if e.kind != "closed" else f"closed:{e.reason}" for e in self.events]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def server(worker: Device, rec: Recorder) -> Iterator[PairingServer]:
    s = PairingServer(worker.identity, worker.trust, "127.0.0.1", 0,
                      gate=PairingGate(on_event=rec.events.append),
                      on_paired=rec.paired.append, failure_delay=0.05)
    yield s
    s.close()


def _wrong(code: str) -> str:
    digits = pairing_code.normalize(code)
    assert digits is not None
    return f"{(int(digits) + 1) % 10 ** 6:06d}"


class Raw:
    """A raw client speaking whatever we make it speak."""

    def __init__(self, port: int, source: str | None = None) -> None:
        self.sock = socket.socket()
        if source:
            self.sock.bind((source, 0))
        self.sock.settimeout(3)
        self.sock.connect(("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self) -> bytes:
        head = self._exactly(LENGTH.size)
        return self._exactly(LENGTH.unpack(head)[0])

    def ask(self, data: bytes):
        self.send(data)
        return unpack(self.frame(), ANY_OP)

    def closed(self, timeout: float = 3.0) -> bool:
        """True once the server has hung up (EOF or reset) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(4096):
                pass
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "the server hung up"
            buf += chunk
        return buf

    def close(self) -> None:
        self.sock.close()


def _hello(name: str = "intruder") -> bytes:
    return pack("hello", {"name": name, "pake": pairing_code.master_pake("000000").start()})


def _raw(v: int, op: str, meta: dict) -> bytes:
    body = msgpack.packb({"v": v, "op": op, "meta": meta}, use_bin_type=True)
    return LENGTH.pack(len(body)) + body


# ---------------------------------------------------------------- the happy path


def test_right_code_pairs_then_the_window_closes(
        server: PairingServer, worker: Device, master: Device, rec: Recorder) -> None:
    opened = server.gate.open(5)
    assert opened.kind == "opened" and server.code == opened.code
    assert 299 < opened.seconds_left <= 300
    peer = pair_with(server.endpoint, opened.code, master.identity, 5.0, trust=master.trust)
    assert peer == PairedPeer("mini-pc", worker.identity.public_key, server.endpoint)
    assert peer.fingerprint == worker.identity.fingerprint
    assert master.trust.contains(worker.identity.public_key)
    stored = worker.trust.get(master.identity.public_key)
    assert stored is not None and stored.name == "laptop" and stored.role == "master"
    assert master.trust.get(worker.identity.public_key).address == server.endpoint
    assert [p.public_key for p in rec.paired] == [master.identity.public_key]
    # A code pairs once: the window closed and the code is gone.
    assert server.code is None and rec.kinds() == ["opened", "closed:paired"]
    assert rec.events[-1].peer == "laptop"
    with pytest.raises(PairingError, match=r"^'mini-pc' is not accepting pairing right now: "
                                           r"open pairing on the device \(run `tpi-chat "
                                           r"worker --pair` there, or press P in its "
                                           r"console\), then type the code it shows\.$"):
        pair_with(server.endpoint, opened.code, master.identity, 5.0, trust=None)


def test_code_may_be_typed_without_dash(server: PairingServer, master: Device) -> None:
    typed = server.gate.open().code.replace("-", " ")
    assert pair_with(server.endpoint, typed, master.identity, 5.0, trust=master.trust).name \
        == "mini-pc"


def test_opening_again_keeps_the_code_and_restarts_the_time(server: PairingServer,
                                                           rec: Recorder) -> None:
    first = server.gate.open(1)
    again = server.gate.open(5)
    assert again.kind == "extended" and again.code == first.code
    assert again.seconds_left > 290
    assert rec.kinds() == ["opened", "extended"]


# ---------------------------------------------------------------- the window


def test_no_pairing_outside_a_window_and_no_cryptography_either(
        server: PairingServer, worker: Device, master: Device, monkeypatch) -> None:
    computed = []
    real = pairing_code.worker_pake
    monkeypatch.setattr(pairing_code, "worker_pake",
                        lambda d: computed.append(d) or real(d))
    for code in ("000-000", "123-456", "999-999"):
        with pytest.raises(PairingError, match="not accepting pairing right now"):
            pair_with(server.endpoint, code, master.identity, 5.0, trust=master.trust)
    assert computed == [] and worker.trust.list() == []
    assert query_info(server.endpoint)["name"] == "mini-pc"  # info still answers


def test_wrong_codes_count_down_then_lock_until_the_user_opens_again(
        server: PairingServer, worker: Device, master: Device, rec: Recorder) -> None:
    code = server.gate.open().code
    msgs = []
    for _ in range(3):
        with pytest.raises(PairingError) as e:
            pair_with(server.endpoint, _wrong(code), master.identity, 5.0, trust=master.trust)
        msgs.append(str(e.value))
    assert msgs == [
        "'mini-pc' refused the code (2 tries left).",
        "'mini-pc' refused the code (1 try left).",
        "'mini-pc' refused the code and is now locked: open pairing again on the device "
        "(it shows a new code).",
    ]
    assert rec.kinds() == ["opened", "wrong_code", "wrong_code", "wrong_code", "closed:locked"]
    assert [e.tries_left for e in rec.events[1:4]] == [2, 1, 0]
    assert rec.events[1].peer == "127.0.0.1"
    # Locked: the right code is refused as well, until the user opens a new window.
    with pytest.raises(PairingError, match="not accepting pairing right now"):
        pair_with(server.endpoint, code, master.identity, 5.0, trust=master.trust)
    assert worker.trust.list() == [] and master.trust.list() == []
    new = server.gate.open().code
    with pytest.raises(PairingError, match=r"\(2 tries left\)"):  # the old code is dead
        pair_with(server.endpoint, code if code != new else _wrong(new), master.identity,
                  5.0, trust=master.trust)
    pair_with(server.endpoint, new, master.identity, 5.0, trust=master.trust)
    assert worker.trust.contains(master.identity.public_key)


def test_the_window_closes_when_its_time_is_up(worker: Device, master: Device) -> None:
    now = [1000.0]
    events: list[PairingEvent] = []
    gate = PairingGate(on_event=events.append, clock=lambda: now[0])
    with PairingServer(worker.identity, worker.trust, gate=gate) as s:
        code = gate.open(1).code
        now[0] += 61
        deadline = time.monotonic() + 3
        while not events[-1].kind == "closed" and time.monotonic() < deadline:
            time.sleep(0.02)  # the server's loop ticks the gate
        assert events[-1] == PairingEvent("closed", reason="expired")
        with pytest.raises(PairingError, match="not accepting pairing"):
            pair_with(s.endpoint, code, master.identity, 5.0, trust=None)


def test_a_window_that_closes_mid_attempt_refuses_the_confirm(server: PairingServer,
                                                              master: Device) -> None:
    code = server.gate.open().code
    raw = Raw(server.port)
    try:
        pake = pairing_code.master_pake(pairing_code.normalize(code))
        ch = raw.ask(pack("hello", {"name": "laptop", "pake": pake.start()}))
        assert ch.op == "challenge"
        server.gate.close()
        reply = raw.ask(pack("confirm", {"public_key": master.identity.public_key,
                                         "mac": b"\0" * 32}))
        assert reply.op == "refused" and reply.meta["reason"] == "closed"
    finally:
        raw.close()


def test_wrong_code_answer_is_delayed(worker: Device, master: Device) -> None:
    with PairingServer(worker.identity, worker.trust, failure_delay=0.6) as s:
        code = s.gate.open().code
        t0 = time.monotonic()
        with pytest.raises(PairingError, match="2 tries left"):
            pair_with(s.endpoint, _wrong(code), master.identity, 5.0, trust=None)
        assert time.monotonic() - t0 >= 0.6


def test_the_code_never_crosses_the_wire(server: PairingServer, master: Device) -> None:
    code = server.gate.open().code
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


# ---------------------------------------------------------------- sessions and slots


def test_a_stalled_hello_holds_no_slot(server: PairingServer, master: Device) -> None:
    """Sessions belong to connections: a stranger's open exchange blocks nobody."""
    code = server.gate.open().code
    raws = [Raw(server.port, f"127.0.0.{i}") for i in (2, 3)]
    try:
        for r in raws:
            assert r.ask(_hello()).op == "challenge"
        t0 = time.monotonic()
        pair_with(server.endpoint, code, master.identity, 5.0, trust=master.trust)
        assert time.monotonic() - t0 < 2
        # their exchanges died with the window: a late confirm is refused
        reply = raws[0].ask(pack("confirm", {"public_key": master.identity.public_key,
                                             "mac": b"\0" * 32}))
        assert reply.meta["reason"] == "closed"
    finally:
        for r in raws:
            r.close()


def test_a_second_hello_on_a_connection_is_refused_and_ends_it(server: PairingServer,
                                                                master: Device) -> None:
    code = server.gate.open().code
    r = Raw(server.port)
    try:
        assert r.ask(_hello()).op == "challenge"
        reply = r.ask(_hello())
        assert reply.op == "refused" and reply.meta["reason"] == "bad_request"
        assert "one pairing attempt per connection" in reply.meta["detail"]
        assert r.closed()
    finally:
        r.close()
    # and it was no guess at the code
    pair_with(server.endpoint, code, master.identity, 5.0, trust=master.trust)


def test_pairing_attempts_per_address_are_rate_limited(worker: Device, master: Device) -> None:
    from core.cluster.pairing_wire import Limits

    with PairingServer(worker.identity, worker.trust,
                       limits=Limits(hellos_per_addr=3, hello_window=60)) as s:
        code = s.gate.open().code
        for _ in range(3):
            r = Raw(s.port)
            assert r.ask(_hello()).op == "challenge"
            r.close()
        with pytest.raises(PairingError, match=r"^'mini-pc' is turning away pairing attempts "
                                               r"from this computer for now \(too many in a "
                                               r"short time\); try again in \d+ s\.$"):
            pair_with(s.endpoint, code, master.identity, 5.0, trust=None)
        # another address still gets through
        r = Raw(s.port, "127.0.0.2")
        assert r.ask(_hello()).op == "challenge"
        r.close()


# ---------------------------------------------------------------- versions


def test_worker_refuses_another_protocol_version_naming_both(server: PairingServer,
                                                              master: Device) -> None:
    r = Raw(server.port)
    try:
        reply = r.ask(_raw(PROTOCOL_VERSION + 98, "hello", {}))
    finally:
        r.close()
    assert reply.op == "refused" and reply.meta["reason"] == "version"
    assert reply.meta["peer_version"] == PROTOCOL_VERSION + 98
    assert reply.meta["version"] == PROTOCOL_VERSION
    code = server.gate.open().code  # still serving
    pair_with(server.endpoint, code, master.identity, 5.0, trust=master.trust)


def _fake_worker(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """A listener answering its first connection with `answer`, whatever it is asked."""
    lst = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        lst.settimeout(5)
        try:
            conn, _ = lst.accept()
        except TimeoutError:
            return
        with conn:
            conn.recv(4096)
            conn.sendall(answer)
            time.sleep(0.3)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return lst, t


def test_master_names_both_versions_when_the_worker_differs(master: Device) -> None:
    other = PROTOCOL_VERSION + 1
    lst, t = _fake_worker(_raw(other, "refused", {"reason": "version"}))
    try:
        with pytest.raises(PairingError, match=rf"speaks protocol {other}, this device speaks "
                                               rf"{PROTOCOL_VERSION}"):
            pair_with(f"tcp://127.0.0.1:{lst.getsockname()[1]}", "123-456", master.identity,
                      5.0, trust=None)
    finally:
        t.join()
        lst.close()


def test_master_recognises_a_worker_of_the_zeromq_days(master: Device) -> None:
    from tests.fixtures.pairing_attacks import ZMTP_GREETING

    lst, t = _fake_worker(ZMTP_GREETING)
    try:
        with pytest.raises(PairingError, match="speaks an older TPI Chat pairing protocol; "
                                               "install the same TPI Chat version on both"):
            pair_with(f"tcp://127.0.0.1:{lst.getsockname()[1]}", "123-456", master.identity,
                      5.0, trust=None)
    finally:
        t.join()
        lst.close()


# ---------------------------------------------------------------- hostile input


def test_garbage_and_pickles_leave_the_server_up(server: PairingServer, master: Device,
                                                 tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # would create `marker` if anyone unpickled it
            return (os.mkdir, (str(marker),))

    evil = pickle.dumps(Evil())
    code = server.gate.open().code
    # Raw bytes: not even a frame (a pickle's first 4 bytes announce 2 GB).
    for payload in (os.urandom(4096), evil, b"\xff" * 10 + b"\x00" * 100, b"\0\0\0\0"):
        r = Raw(server.port)
        r.send(payload)
        assert r.closed()
        r.close()
    # Frames carrying nonsense: each is answered `refused` and ends its connection.
    nonsense = [
        LENGTH.pack(len(evil)) + evil, LENGTH.pack(64) + os.urandom(64),
        LENGTH.pack(1) + b"\xc1", _frame(msgpack.packb([1, 2, 3])),
        _frame(msgpack.packb(msgpack.ExtType(1, evil))),
        _frame(msgpack.packb({"v": PROTOCOL_VERSION, "op": "info", "meta": {},
                              "tensors": [{"dtype": "object", "shape": [1]}]})),
        _raw(PROTOCOL_VERSION, "format_disk", {}),
        _raw(PROTOCOL_VERSION, "info", {"deep": [[[[[1]]]]]}),
        _raw(PROTOCOL_VERSION, "hello", {"name": 5, "pake": "x"}),
        _raw(PROTOCOL_VERSION, "hello", {"name": "x", "pake": b"B" + b"\0" * 32}),
        _raw(PROTOCOL_VERSION, "confirm", {"public_key": "k", "mac": b""}),
        _raw(True, "info", {}),
    ]
    for frame in nonsense:
        r = Raw(server.port)
        reply = r.ask(frame)
        assert reply.op == "refused", frame
        assert reply.meta["reason"] in ("bad_request", "no_session"), reply.meta
        assert r.closed()
        r.close()
    assert not marker.exists()
    assert query_info(server.endpoint, 3.0)["name"] == "mini-pc"
    # None of that counted as a guess.
    with pytest.raises(PairingError, match=r"\(2 tries left\)"):
        pair_with(server.endpoint, _wrong(code), master.identity, 5.0, trust=None)
    pair_with(server.endpoint, code, master.identity, 5.0, trust=master.trust)
    assert master.trust.list()


def _frame(body: bytes) -> bytes:
    return LENGTH.pack(len(body)) + body


@pytest.mark.parametrize("field", ["op", "v", "meta"])
def test_an_op_nested_a_thousand_lists_deep_is_refused(server: PairingServer, field: str,
                                                       caplog) -> None:
    """Found by the pairing port's long fuzz run: an `op` that is a list nested 995 to
    1023 deep (msgpack decodes up to 1024) made the refusal's str(op) raise
    RecursionError in the server thread; its catch-all logged a traceback and the
    stranger got no answer. Every depth is now one `refused`, and nothing is logged."""
    server.gate.open()
    header = {"v": msgpack.packb(PROTOCOL_VERSION), "op": msgpack.packb("info"),
              "meta": b"\x80"}
    for i, depth in enumerate((900, 990, 995, 1000, 1010, 1023, 1024)):
        header[field] = b"\x91" * depth + b"\xc0"  # [[[...[None]...]]], packed by hand
        body = b"\x83" + b"".join(msgpack.packb(k) + v for k, v in header.items())
        r = Raw(server.port, source=f"127.0.9.{i + 1}")
        reply = r.ask(_frame(body))
        assert reply.op == "refused" and reply.meta["reason"] == "bad_request", reply.meta
        assert len(reply.meta["detail"]) <= 200
        assert r.closed()
        r.close()
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], \
        caplog.records[0].getMessage()
    assert query_info(server.endpoint, 3.0)["name"] == "mini-pc"


def test_a_bug_costs_only_its_connection(server: PairingServer, caplog,
                                        monkeypatch) -> None:
    """Whatever a future bug raises while a frame is handled: that stranger gets
    `refused error` at once (not silence until the idle timeout), the traceback is
    logged, and a connection open beside it is served."""
    waiting = Raw(server.port, source="127.0.8.1")
    real = server._handle

    def buggy(conn, body):
        if conn.peer == "127.0.8.2":
            raise KeyError("a bug")
        real(conn, body)

    monkeypatch.setattr(server, "_handle", buggy)
    r = Raw(server.port, source="127.0.8.2")
    start = time.monotonic()
    reply = r.ask(pack("info"))
    assert reply.op == "refused" and reply.meta["reason"] == "error", reply.meta
    assert r.closed(1.0) and time.monotonic() - start < 2.0
    r.close()
    bugs = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(bugs) == 1 and "127.0.8.2" in bugs[0].getMessage() and bugs[0].exc_info
    assert waiting.ask(pack("info")).op == "info"
    waiting.close()


def test_a_worker_that_does_not_know_the_code_is_not_trusted(master: Device) -> None:
    """Mutual authentication: a fake worker answering 'paired' with its own MAC fails."""
    lst = socket.create_server(("127.0.0.1", 0))
    fake = make_device(Path(master.data_dir).parent, "fake", "master").identity

    def fake_worker() -> None:
        lst.settimeout(5)
        conn, _ = lst.accept()
        conn.settimeout(5)
        with conn:
            f = conn.makefile("rb")
            pake = pairing_code.worker_pake("999999")
            msg_b = pake.start()
            hello = unpack(f.read(LENGTH.unpack(f.read(4))[0]), frozenset({"hello"}))
            key = pake.finish(hello.meta["pake"])
            conn.sendall(pack("challenge", {"name": "fake", "pake": msg_b,
                                            "public_key": fake.public_key}))
            confirm = unpack(f.read(LENGTH.unpack(f.read(4))[0]), frozenset({"confirm"}))
            th = pairing_code.transcript(PROTOCOL_VERSION, "laptop", "fake",
                                         hello.meta["pake"], msg_b,
                                         confirm.meta["public_key"], fake.public_key)
            conn.sendall(pack("paired", {"mac": pairing_code.confirmation(key, "worker", th)}))

    t = threading.Thread(target=fake_worker)
    t.start()
    try:
        with pytest.raises(PairingError, match="could not prove it knows the pairing code"):
            pair_with(f"tcp://127.0.0.1:{lst.getsockname()[1]}", "123-456", master.identity,
                      5.0, trust=master.trust)
    finally:
        t.join()
        lst.close()
    assert master.trust.list() == []


# ---------------------------------------------------------------- user errors


@pytest.mark.parametrize("typed", ["12-34", "abc-def", "1234567", "", "１２３４５６"])
def test_malformed_code_is_refused_before_any_network(typed: str, master: Device) -> None:
    with pytest.raises(PairingError, match="type the 6 digits the worker shows"):
        pair_with("tcp://127.0.0.1:1", typed, master.identity, 0.1, trust=None)


def test_silence_times_out_with_a_clear_message(master: Device) -> None:
    lst = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    try:
        t0 = time.monotonic()
        with pytest.raises(PairingError, match=r"no answer from the device at "
                                               r"127.0.0.1:\d+ within 0.3 s"):
            pair_with(f"tcp://127.0.0.1:{lst.getsockname()[1]}", "123-456", master.identity,
                      0.3, trust=None)
        assert time.monotonic() - t0 < 2
    finally:
        lst.close()


def test_nothing_listening_is_a_clear_error(master: Device) -> None:
    lst = socket.create_server(("127.0.0.1", 0))
    port = lst.getsockname()[1]
    lst.close()
    with pytest.raises(PairingError, match=rf"nothing answers on 127.0.0.1:{port}; check "
                                           "that `tpi-chat worker` runs there"):
        query_info(f"tcp://127.0.0.1:{port}", 2.0)


def test_a_failing_callback_does_not_stop_the_server(worker: Device, master: Device) -> None:
    def boom(_: object) -> None:
        raise RuntimeError("console went away")

    gate = PairingGate(on_event=boom)
    with PairingServer(worker.identity, worker.trust, gate=gate, on_paired=boom) as s:
        pair_with(s.endpoint, gate.open().code, master.identity, 5.0, trust=master.trust)
        assert query_info(s.endpoint, 3.0)["paired"] == "1"


def test_new_codes_look_right() -> None:
    codes = {pairing_code.new_code() for _ in range(200)}
    assert all(len(c) == 7 and c[3] == "-" and pairing_code.normalize(c) for c in codes)
    assert len(codes) > 190  # from `secrets`, not a constant


def test_port_in_use_is_a_clear_error(server: PairingServer, worker: Device) -> None:
    with pytest.raises(PairingError, match=rf"cannot listen for pairing on 127.0.0.1:"
                                           rf"{server.port} \(Address already in use\)"):
        PairingServer(worker.identity, worker.trust, "127.0.0.1", server.port)


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
