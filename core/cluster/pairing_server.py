"""The worker's pairing port: one thread, non-blocking sockets, hard limits.

Every connection is a stranger's until a code proves otherwise, so what one can make
the worker hold is bounded by pairing_wire.Limits: one frame of at most 4 KB in
memory, 16 KB and 4 frames in all, 5 s of silence, 20 s of life; at most 4 open
connections per address and 32 in all (a new one evicts the oldest, so a stalled
stranger cannot keep a real master out); new connections and pairing attempts per
address (and attempts overall) rate-limited in a sliding window (pairing_guard.py).

A pairing attempt is one `hello` (the worker's SPAKE2 half, ~18 ms of CPU) and one
`confirm` on the same connection; a second hello on a connection is refused and ends
it. Hellos are refused before any cryptography unless the user opened a pairing window
(pairing_window.py); every wrong code counts against that window, which locks after a
few. Any malformed frame gets one `refused` answer and the connection is closed.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.cluster import pairing_code
from core.cluster.identity import Identity, is_public_key
from core.cluster.pairing import (
    BAD_REQUEST,
    CLOSED,
    ERROR,
    LOCKED,
    NO_SESSION,
    OPS_TO_WORKER,
    SLOW_DOWN,
    VERSION,
    WRONG_CODE,
    PairingError,
    valid_name,
    valid_pake,
)
from core.cluster.pairing_guard import AddressGuard, address_key
from core.cluster.pairing_window import PairingGate
from core.cluster.pairing_wire import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    FrameParser,
    Limits,
    Message,
    WireError,
    pack,
    unpack,
)
from core.cluster.peer_info import PeerInfo, local_peer_info
from core.cluster.trust import TrustedPeer, TrustStore
from core.errors import TpiError

log = logging.getLogger(__name__)

_POLL_S = 0.1
_ACCEPTS_PER_TICK = 64


@dataclass
class _Session:
    """One pairing attempt between hello and confirm."""

    generation: int  # the pairing window it was started in
    master_name: str
    master_msg: bytes
    worker_msg: bytes
    shared_key: bytes


class _Conn:
    __slots__ = ("sock", "key", "peer", "opened", "last", "parser", "frames", "hellos",
                 "session", "waiting")

    def __init__(self, sock: socket.socket, key: str, peer: str, now: float,
                 limits: Limits) -> None:
        self.sock, self.key, self.peer = sock, key, peer
        self.opened = self.last = now
        self.parser = FrameParser(limits)
        self.frames = 0
        self.hellos = 0
        self.session: _Session | None = None
        self.waiting = False  # a delayed answer is due: read nothing more


class PairingServer:
    """The worker's pairing endpoint, served from a background thread.

    `gate` is the pairing window (the console opens it); `on_paired(peer)` runs after
    a master was added to `trust`, on the server thread: keep it short."""

    def __init__(self, identity: Identity, trust: TrustStore, host: str = "127.0.0.1",
                 port: int = 0, *, gate: PairingGate | None = None,
                 on_paired: Callable[[TrustedPeer], None] | None = None,
                 describe: Callable[[], PeerInfo] | None = None,
                 limits: Limits = DEFAULT_LIMITS, failure_delay: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if trust.role != "master":
            raise ValueError("a worker's pairing server stores masters")
        self.identity, self.trust = identity, trust
        self.gate = gate if gate is not None else PairingGate()
        self.on_paired = on_paired
        self.limits = limits
        self.failure_delay = failure_delay
        self.clock = clock
        self.guard = AddressGuard(limits, clock)
        self._describe = describe
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._listener = socket.create_server((host, port), family=family, backlog=64)
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            raise PairingError(f"cannot listen for pairing on {host}:{port} ({why}); choose "
                               "another address or port.") from e
        self._listener.setblocking(False)
        self.host, self.port = host, int(self._listener.getsockname()[1])
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._conns: dict[socket.socket, _Conn] = {}  # oldest first
        self._delayed: list[tuple[float, _Conn, bytes]] = []  # (due, conn, frame)
        self._accept_warned = -1e9
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pairing-server", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{h}:{self.port}"

    @property
    def code(self) -> str | None:
        """The code of the open pairing window, None when pairing is closed."""
        cur = self.gate.current()
        return cur[1] if cur else None

    def open_connections(self) -> int:
        return len(self._conns)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> PairingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the server thread --

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._tick()
                except Exception:  # a bug must not take the pairing port down with it
                    log.exception("pairing server: unexpected error")
                    time.sleep(_POLL_S)
        finally:
            for conn in list(self._conns.values()):
                self._drop(conn)
            self._sel.close()
            self._listener.close()

    def _tick(self) -> None:
        for key, _ in self._sel.select(timeout=_POLL_S):
            if key.data is None:
                self._accept()
            elif key.data.sock in self._conns:
                self._read_guarded(key.data)
        now = self.clock()
        due = [d for d in self._delayed if d[0] <= now]
        self._delayed = [d for d in self._delayed if d[0] > now]
        for _, conn, frame in due:
            if conn.sock in self._conns:
                self._send(conn, frame)
                self._drop(conn)
        lim = self.limits
        for conn in list(self._conns.values()):
            if now - conn.opened > lim.conn_seconds or (
                    not conn.waiting and now - conn.last > lim.idle_seconds):
                self._drop(conn)
        self.gate.tick()

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_TICK):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors: let the others finish first
                now = self.clock()
                if now - self._accept_warned >= 10.0:
                    self._accept_warned = now
                    log.warning("pairing server: cannot accept (%s)", e)
                time.sleep(_POLL_S)  # the listener stays readable: do not spin on it
                return
            sock.setblocking(False)
            key = address_key(addr[0])
            why = self.guard.admit(key)
            if why is not None:
                self._turn_away(sock, why, key)
                continue
            if len(self._conns) >= self.limits.max_conns:
                oldest = next((c for c in self._conns.values() if not c.waiting),
                              next(iter(self._conns.values())))
                self._drop(oldest)
            conn = _Conn(sock, key, addr[0], self.clock(), self.limits)
            self._conns[sock] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _turn_away(self, sock: socket.socket, why: str, key: str) -> None:
        """One refusal and goodbye, for a connection over a limit (never registered)."""
        try:
            sock.recv(self.limits.max_frame + 4)  # what is already there: closing with
        except OSError:  # unread bytes would reset the line before our answer
            pass
        try:
            sock.send(self._refusal(why, detail="too many connections from your address",
                                    retry_after=self.guard.retry_after(key)))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()

    def _drop(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock, None) is None:
            return
        if not conn.waiting:
            self._sel.unregister(conn.sock)
        conn.sock.close()
        self.guard.release(conn.key)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(conn.parser.want())
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        conn.last = self.clock()
        try:
            body = conn.parser.feed(data)
        except WireError as e:
            self._finish(conn, self._refusal(BAD_REQUEST, str(e)))
            return
        if body is None:
            return
        conn.frames += 1
        if conn.frames > self.limits.conn_frames:
            self._finish(conn, self._refusal(BAD_REQUEST, "too many messages on one "
                                                          "connection"))
            return
        self._handle(conn, body)

    def _read_guarded(self, conn: _Conn) -> None:
        """_read, with a bug costing only that connection: it is logged with its
        traceback (a bug all the same) and the stranger gets `refused error` at once,
        rather than silence until the idle timeout and a stall of every other one."""
        try:
            self._read(conn)
        except Exception:
            log.exception("pairing server: unexpected error on a connection from %s",
                          conn.peer)
            if conn.sock in self._conns:
                self._finish(conn, self._refusal(ERROR, "it hit a bug, see its console"))

    def _send(self, conn: _Conn, frame: bytes) -> bool:
        """Send a whole frame or drop the connection (a peer that does not read)."""
        try:
            if conn.sock.send(frame) == len(frame):
                return True
        except OSError:
            pass
        self._drop(conn)
        return False

    def _finish(self, conn: _Conn, frame: bytes) -> None:
        """Answer and close."""
        if self._send(conn, frame):
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._drop(conn)

    def _later(self, conn: _Conn, frame: bytes) -> None:
        """Answer after `failure_delay`, then close; read nothing meanwhile."""
        self._sel.unregister(conn.sock)
        conn.waiting = True
        self._delayed.append((self.clock() + self.failure_delay, conn, frame))

    def _refusal(self, reason: str, detail: str = "", **extra: Any) -> bytes:
        return pack("refused", {"reason": reason, "name": self.identity.name,
                                "version": PROTOCOL_VERSION, "detail": detail[:200], **extra})

    # -- the protocol --

    def _handle(self, conn: _Conn, body: bytes) -> None:
        try:
            msg = unpack(body, OPS_TO_WORKER)
        except WireError as e:
            if e.version is not None:
                self._finish(conn, self._refusal(
                    VERSION, f"this worker speaks protocol {PROTOCOL_VERSION}",
                    peer_version=e.version))
            else:
                self._finish(conn, self._refusal(BAD_REQUEST, str(e)))
            return
        if msg.op == "info":
            try:
                self._send(conn, pack("info", {"txt": self._info().to_txt()}))
            except TpiError as e:  # e.g. a damaged trust store: say so instead of hanging up
                self._finish(conn, self._refusal(ERROR, str(e)))
        elif msg.op == "hello":
            self._hello(conn, msg)
        else:
            self._confirm(conn, msg)

    def _info(self) -> PeerInfo:
        if self._describe is not None:
            return self._describe()
        return local_peer_info(self.identity, self.host, self.port,
                               paired=bool(self.trust.list()))

    def _hello(self, conn: _Conn, msg: Message) -> None:
        window = self.gate.current()
        if window is None:  # refused before any cryptography
            self._finish(conn, self._refusal(CLOSED, "pairing is not open on this device"))
            return
        conn.hellos += 1
        if not self.guard.hello(conn.key):
            self._finish(conn, self._refusal(SLOW_DOWN, "too many pairing attempts",
                                             retry_after=self.guard.retry_after(conn.key)))
            return
        if conn.hellos > 1:
            self._finish(conn, self._refusal(BAD_REQUEST, "one pairing attempt per connection"))
            return
        name, msg_a = msg.meta.get("name"), msg.meta.get("pake")
        if not (valid_name(name) and valid_pake(msg_a)):
            self._finish(conn, self._refusal(BAD_REQUEST, "malformed hello"))
            return
        generation, code = window
        digits = pairing_code.normalize(code)
        assert digits is not None
        pake = pairing_code.worker_pake(digits)
        msg_b = pake.start()
        try:
            key = pake.finish(msg_a)
        except Exception:  # not a point on the curve, reflected message, ...
            self._finish(conn, self._refusal(BAD_REQUEST, "malformed key exchange message"))
            return
        conn.session = _Session(generation, name, msg_a, msg_b, key)
        self._send(conn, pack("challenge", {"name": self.identity.name, "pake": msg_b,
                                            "public_key": self.identity.public_key}))

    def _confirm(self, conn: _Conn, msg: Message) -> None:
        s, conn.session = conn.session, None  # one confirmation per exchange
        if s is None:
            self._finish(conn, self._refusal(NO_SESSION, "confirm without hello"))
            return
        if not self.gate.is_open(s.generation):
            self._finish(conn, self._refusal(CLOSED, "pairing closed during the attempt"))
            return
        master_key, mac = msg.meta.get("public_key"), msg.meta.get("mac")
        if not is_public_key(master_key) or master_key == self.identity.public_key:
            self._finish(conn, self._refusal(BAD_REQUEST, "malformed public key"))
            return
        th = pairing_code.transcript(PROTOCOL_VERSION, s.master_name, self.identity.name,
                                     s.master_msg, s.worker_msg, master_key,
                                     self.identity.public_key)
        if not pairing_code.mac_ok(pairing_code.confirmation(s.shared_key, "master", th), mac):
            self._wrong_code(conn, s.generation)
            return
        # The window is still open (checked above; only this thread closes it, but for
        # a shutdown): trust the master, then close the window, a code pairs once.
        peer = TrustedPeer(public_key=master_key, name=s.master_name, role="master")
        try:
            self.trust.add(peer)
        except (TpiError, OSError) as e:
            log.error("pairing server: cannot store the master's key: %s", e)
            self._finish(conn, self._refusal(ERROR, "it could not save the pairing, see its "
                                                    "console"))
            return
        self._finish(conn, pack("paired", {
            "mac": pairing_code.confirmation(s.shared_key, "worker", th)}))
        if self.on_paired is not None:
            try:
                self.on_paired(peer)
            except Exception:
                log.exception("pairing server: on_paired failed")
        self.gate.paired(s.generation, s.master_name)

    def _wrong_code(self, conn: _Conn, generation: int) -> None:
        left = self.gate.wrong_code(generation, conn.peer)
        if left is None:
            frame = self._refusal(CLOSED, "pairing closed during the attempt")
        elif left == 0:
            frame = self._refusal(LOCKED, "too many wrong codes", tries_left=0)
        else:
            frame = self._refusal(WRONG_CODE, "", tries_left=left)
        # Answer late: guessing stays slow even within the few tries a window allows.
        self._later(conn, frame)

