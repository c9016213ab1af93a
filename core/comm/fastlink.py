"""Raw TCP links between rank 0 and workers on the same machine (the fast data path).

ZeroMQ costs ~100 us per star allreduce on top of the kernel's loopback round trip
(I/O thread hand-offs, multipart framing). For ranks on one machine the allreduce goes
over a plain TCP socket instead:

- TCP_NODELAY, blocking sockets with SO_RCVTIMEO/SO_SNDTIMEO slices (the hot path is one
  sendmsg and one recvmsg_into syscall per message; a slice only expires when nothing
  arrived, and then we check the deadline, close() and the other links' liveness);
- every message is the fixed 16-byte wire header (core/comm/wire.py) and one raw
  payload, received straight into a preallocated buffer; kind, sequence number and
  byte count must equal what the receiver expects, or the group fails with
  ProtocolError (nothing is ever sized by what a peer says);
- link emulation (core/comm/linkemu.py) delays each send, as on the ZeroMQ path.

Only loopback: the listener binds 127.0.0.1, and a worker uses it only when rank 0
runs on the same machine and network namespace (see machine_id). Links to other devices stay
on ZeroMQ + CURVE, so nothing crosses a network in clear.

Admission: a worker opens the connection and sends one header (kind FAST_HELLO, seq =
its rank, nbytes = 32) plus HMAC-SHA256(session token, "tpi-fast" | rank). Rank 0 only
accepts ranks that asked for a fast link in their (token-checked) ZeroMQ hello, reads
at most 48 bytes from each connection and closes anything else unanswered; the
listener is closed once every expected link is in, so later strangers find no port.
The token reaches ranks only over CurveZMQ (the control channel's setup). Where the OS
tells who owns a loopback socket (Linux, loopback_uid.py), both ends also check that
the other one is the same user before anything is read or sent: rank 0 closes a
connection of another user unread, and a worker offered a link by rank 0 of another
user (a worker daemon run as a service account, say) stays on ZeroMQ + CURVE.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import selectors
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.comm import loopback_uid, wire
from core.comm.linkemu import LinkEmulation
from core.comm.transport import GroupClosed
from core.errors import PeerError, ProtocolError

STAGE_MAX = 64 * 1024  # payloads up to this go through one contiguous staging buffer
SLICE_S = 0.1  # receive slice: how often a waiting receive checks deadline and close()
_MAC_SIZE = 32
_HELLO_SIZE = wire.HOT_SIZE + _MAC_SIZE
_TIMEVAL = struct.Struct("@ll")
LOOPBACK = "127.0.0.1"


def machine_id() -> str:
    """Equal ids mean rank 0's loopback listener is reachable: same host name, same boot
    and same network namespace (tests put "remote" devices in namespaces of their own)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = f"{uuid.getnode():x}"
    try:
        netns = os.readlink("/proc/self/ns/net")
    except OSError:
        netns = ""
    return f"{socket.gethostname()}/{boot}/{netns}"


def enabled(transport: str) -> bool:
    """Whether this process may use fast links (TPI_DATA_PLANE=zmq forces ZeroMQ)."""
    return transport == "auto" and os.environ.get("TPI_DATA_PLANE", "auto") != "zmq"


def offer(srv: socket.socket) -> dict:
    """Rank 0's endpoints["fast"] entry for listener `srv`."""
    return {"port": srv.getsockname()[1], "machine": machine_id(),
            "uid": loopback_uid.our_uid()}


def usable(offer: object) -> bool:
    """Worker: rank 0 offered a fast link (endpoints["fast"]) and runs on this machine,
    as this user."""
    if not enabled("auto") or not isinstance(offer, dict):
        return False
    port = offer.get("port")
    return (isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
            and offer.get("machine") == machine_id()
            and offer.get("uid") == loopback_uid.our_uid())


def hello_mac(token: str, rank: int) -> bytes:
    """What a worker proves it holds the session token with (the token is never sent)."""
    return hmac.new(token.encode(), b"tpi-fast|%d" % rank, hashlib.sha256).digest()


def _tune(sock: socket.socket, send_timeout_s: float) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(0, int(SLICE_S * 1e6)))
    secs = max(send_timeout_s, 0.001)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                    _TIMEVAL.pack(int(secs), int((secs % 1) * 1e6)))


@dataclass
class FastLink:
    """One authenticated loopback TCP connection to `peer` (a rank of the group)."""

    sock: socket.socket
    peer: int
    link: LinkEmulation | None = None
    op_timeout: float = 60.0

    def __post_init__(self) -> None:
        self._hdr = bytearray(wire.HOT_SIZE)  # header of a big (scatter) receive
        self._out = bytearray(wire.HOT_SIZE)  # header of a big (gather) send
        self._want = bytearray(wire.HOT_SIZE)  # the header the next receive must carry
        self._stages: dict[int, tuple[memoryview, memoryview, memoryview]] = {}
        self._deadline: float | None = None  # set when a receive first waits a slice

    def _stage(self, n: int) -> tuple[memoryview, memoryview, memoryview]:
        """(message, header, payload) views of the staging buffer for an n-byte payload.

        Small messages go through one contiguous buffer: a copy of a few KB costs less
        than the scatter/gather syscalls (sendmsg, recvmsg_into) would add.
        """
        got = self._stages.get(n)
        if got is None:
            if len(self._stages) >= 8:  # sizes vary with prefill lengths: keep a few
                self._stages.clear()
            msg = memoryview(bytearray(wire.HOT_SIZE + n))
            got = (msg, msg[:wire.HOT_SIZE], msg[wire.HOT_SIZE:])
            self._stages[n] = got
        return got

    # -- sending -------------------------------------------------------------------

    def send(self, kind: int, seq: int, body: memoryview) -> None:
        """Send header + payload (a byte view); it is in the kernel when this returns."""
        n = body.nbytes
        if self.link is not None:
            self.link.before_send(wire.HOT_SIZE + n)
        try:
            if n <= STAGE_MAX:
                msg, hdr, payload = self._stage(n)
                wire.HOT.pack_into(hdr, 0, wire.MAGIC, wire.PROTOCOL_VERSION, kind, seq, n)
                payload[:] = body
                self.sock.sendall(msg)
            else:
                self._send_gather(kind, seq, body)
        except (BlockingIOError, TimeoutError) as e:
            raise PeerError(f"rank {self.peer} did not take our data within "
                            f"{self.op_timeout:g} s.") from e
        except OSError as e:
            raise PeerError(f"rank {self.peer} disconnected.") from e

    def _send_gather(self, kind: int, seq: int, body: memoryview) -> None:
        """A big payload: header and payload in one sendmsg, no copy."""
        wire.HOT.pack_into(self._out, 0, wire.MAGIC, wire.PROTOCOL_VERSION, kind, seq,
                           body.nbytes)
        sent = self.sock.sendmsg([self._out, body])
        if sent < wire.HOT_SIZE:
            self.sock.sendall(memoryview(self._out)[sent:])
            sent = wire.HOT_SIZE
        self.sock.sendall(body[sent - wire.HOT_SIZE:])

    # -- receiving -----------------------------------------------------------------

    def recv(self, kind: int, seq: int, body: memoryview, closing: threading.Event,
             others: list[FastLink] | tuple = ()) -> None:
        """Receive one message whose payload must be exactly `body` (bytes), into it.

        `others`: links checked for a dropped peer while this one is silent.
        """
        n = body.nbytes
        self._deadline = None
        wire.HOT.pack_into(self._want, 0, wire.MAGIC, wire.PROTOCOL_VERSION, kind, seq, n)
        if n <= STAGE_MAX:
            msg, hdr, payload = self._stage(n)
            self._fill(msg, closing, others)
            if hdr != self._want:
                self._mismatch(hdr)
            body[:] = payload
            return
        hview = memoryview(self._hdr)
        self._fill(hview, closing, others)
        if self._hdr != self._want:
            self._mismatch(hview)
        self._fill(body, closing, others)

    def _fill(self, view: memoryview, closing: threading.Event, others) -> None:
        """Receive exactly len(view) bytes into `view`."""
        got = self._recv_some(view, closing, others)  # the common case: all of it at once
        while got < view.nbytes:
            got += self._recv_some(view[got:], closing, others)

    def _mismatch(self, hdr: memoryview) -> None:
        """Raise ProtocolError naming what arrived instead of the expected header."""
        k, s, nb = wire.unpack(bytes(hdr))  # raises for a bad magic or version
        kind, seq, nbytes = wire.unpack(bytes(self._want))
        raise ProtocolError(
            f"Expected a {wire.Kind(kind).name} message #{seq} of {nbytes} bytes from "
            f"rank {self.peer}, got kind {k} #{s} of {nb} bytes; the ranks are out of step.")

    def _recv_some(self, view: memoryview, closing: threading.Event, others) -> int:
        while True:
            try:
                n = self.sock.recv_into(view)
            except (BlockingIOError, TimeoutError):
                self._waited(closing, others)
                continue
            except OSError as e:
                raise PeerError(f"rank {self.peer} disconnected.") from e
            if n == 0:
                raise PeerError(f"rank {self.peer} disconnected.")
            return n

    def _waited(self, closing: threading.Event, others) -> None:
        """A slice passed with nothing: raise if closing, a peer dropped, or time is up."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.op_timeout - SLICE_S  # one slice already elapsed
        if closing.is_set():
            raise GroupClosed("The communication group was closed while waiting for a peer.")
        for o in others:
            if o is not self and o.peer_gone():
                raise PeerError(f"rank {o.peer} disconnected.")
        if now >= self._deadline:
            raise PeerError(f"rank {self.peer} did not answer within {self.op_timeout:g} s.")

    def peer_gone(self) -> bool:
        """True if the peer closed its end (non-blocking peek; data pending means alive)."""
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, TimeoutError):
            return False
        except OSError:
            return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# -- set-up ----------------------------------------------------------------------------

def listen() -> socket.socket:
    """Rank 0: an ephemeral loopback listener for the workers' fast links."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((LOOPBACK, 0))
    srv.listen(64)
    srv.setblocking(False)
    return srv


def connect(port: int, rank: int, token: str, link: LinkEmulation | None,
            op_timeout: float, timeout: float) -> FastLink:
    """Worker: open our fast link to rank 0 and prove we hold the session token."""
    try:
        sock = socket.create_connection((LOOPBACK, port), timeout=max(timeout, 0.1))
    except OSError as e:
        raise PeerError(f"rank {rank} could not open its local link to rank 0 ({e}).") from e
    if not loopback_uid.same_user(sock):  # the token's proof goes to rank 0 only
        sock.close()
        raise PeerError(f"rank {rank}: the local link's port belongs to another user.")
    sock.settimeout(None)
    _tune(sock, op_timeout)
    sock.sendall(wire.pack(wire.Kind.FAST_HELLO, rank, _MAC_SIZE) + hello_mac(token, rank))
    return FastLink(sock, 0, link, op_timeout)


class _Pending:
    """A connection accepted by rank 0 whose hello is not complete yet."""

    __slots__ = ("sock", "buf")

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, bytearray()


def _admit(buf: bytes, token: str, expected: set[int]) -> int:
    """The rank a complete hello proves; ProtocolError for anything else."""
    kind, rank, nbytes = wire.unpack(buf[:wire.HOT_SIZE])
    if kind != wire.Kind.FAST_HELLO or nbytes != _MAC_SIZE or rank not in expected:
        raise ProtocolError("not a fast-link hello of an expected rank")
    if not hmac.compare_digest(bytes(buf[wire.HOT_SIZE:]), hello_mac(token, rank)):
        raise ProtocolError("fast-link hello without the session token")
    return rank


def accept(srv: socket.socket, expected: set[int], token: str, link: LinkEmulation | None,
           op_timeout: float, deadline: float, closing: threading.Event
           ) -> tuple[dict[int, FastLink], int]:
    """Rank 0: admit one fast link per expected rank; returns (links, strangers dropped).

    Strangers (garbage, silence, wrong token, a rank already in) are closed without an
    answer and never delay the real ranks: every connection is read without blocking.
    """
    links: dict[int, FastLink] = {}
    dropped = 0
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, None)
    try:
        while len(links) < len(expected):
            left = deadline - time.monotonic()
            if closing.is_set() or left <= 0:
                missing = sorted(expected - links.keys())
                raise PeerError(f"rank{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(map(str, missing))} did not open a local link "
                                "to rank 0 in time.")
            for key, _ in sel.select(min(left, SLICE_S)):
                if key.data is None:
                    dropped += _accept_one(srv, sel)
                    continue
                rank = _read_hello(key.data, sel, token, expected - links.keys())
                if rank == -1:
                    dropped += 1
                elif rank is not None:
                    key.data.sock.setblocking(True)
                    _tune(key.data.sock, op_timeout)
                    links[rank] = FastLink(key.data.sock, rank, link, op_timeout)
    finally:  # admitted links were unregistered: what is left are strangers
        for key in list(sel.get_map().values()):
            if key.data is not None:
                key.data.sock.close()
        sel.close()
    return links, dropped


def _accept_one(srv: socket.socket, sel: selectors.BaseSelector) -> int:
    """Take one connection; 1 if it was another user's and was closed unread, else 0."""
    try:
        conn, _ = srv.accept()
    except BlockingIOError:
        return 0
    if not loopback_uid.same_user(conn):
        conn.close()
        return 1
    conn.setblocking(False)
    sel.register(conn, selectors.EVENT_READ, _Pending(conn))
    return 0


def _read_hello(pend: _Pending, sel: selectors.BaseSelector, token: str,
                expected: set[int]) -> int | None:
    """Rank proven by a finished hello, None while incomplete, -1 for a dropped stranger."""
    try:
        chunk = pend.sock.recv(_HELLO_SIZE - len(pend.buf))
    except BlockingIOError:
        return None
    except OSError:
        chunk = b""
    pend.buf += chunk
    if chunk and len(pend.buf) < _HELLO_SIZE:
        return None
    sel.unregister(pend.sock)
    try:
        if not chunk:
            raise ProtocolError("closed before its hello")
        return _admit(bytes(pend.buf), token, expected)
    except ProtocolError:
        pend.sock.close()
        return -1
