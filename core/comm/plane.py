"""State of one rank's data plane: sockets, who is who, and the send/receive primitives.

Topology (all TCP, ephemeral ports):
- star: rank 0 binds a ROUTER, each worker connects a DEALER. Rank 0 learns each
  worker's (libzmq-assigned, unguessable) routing id from its authenticated hello, so
  frames from anyone else are dropped and counted, never mixed into a sum.
- ring: every rank binds a ROUTER "ring_in" and connects a DEALER "ring_out" to the next
  rank's ring_in; the next rank learns our routing id from a ring hello likewise.
- fast path (transport "auto", the default): a worker on the same machine as rank 0
  also opens a raw loopback TCP link to it (core/comm/fastlink.py), admitted with an
  HMAC of the session token; its star allreduces go there instead of the ZeroMQ star.
  Set-up, step broadcasts and the ring stay on ZeroMQ; links to other devices stay
  ZeroMQ + CURVE.

The collectives (core/comm/allreduce.py, core/comm/broadcast.py) are functions of a
DataPlane; set-up lives in core/comm/handshake.py.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
import zmq

from core.comm import wire
from core.comm.codec import DEFAULT_LIMITS, CodecLimits
from core.comm.fastlink import FastLink
from core.comm.linkemu import LinkEmulation
from core.comm.transport import PeerWatch, wait_for
from core.errors import PeerError, ProtocolError

# Below this, pyzmq's copy=True send (one memcpy into a libzmq message) beats the
# zero-copy path, whose Frame bookkeeping and release notification cost tens of us.
ZERO_COPY_MIN = 64 * 1024

ALGORITHMS = ("star", "ring")
_MAX_VIEWS = 16
_MAX_VIEW_BYTES = 256 * 1024
TRANSPORTS = ("auto", "zmq")  # auto: raw TCP to ranks on this machine, ZeroMQ to the others


_REDUCIBLE = (torch.float32, torch.float16, torch.bfloat16)


def check_tensor(t: torch.Tensor) -> None:
    """ValueError unless `t` can be reduced in place (contiguous CPU float)."""
    if t.dtype not in _REDUCIBLE or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError("allreduce_ needs a contiguous CPU float32/float16/bfloat16 tensor")


def flat_array(t: torch.Tensor) -> np.ndarray:
    """Writable zero-copy 1-D numpy view of a contiguous CPU tensor.

    numpy has no bfloat16: those are viewed as int16 (raw bits), fine for the wire;
    arithmetic on them goes through torch.
    """
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    try:
        return t.numpy().reshape(-1)
    except RuntimeError:  # requires_grad: detach costs a little, only pay it then
        return t.detach().numpy().reshape(-1)


@dataclass
class DataPlane:
    """Everything a collective needs; one per rank process."""

    rank: int
    world_size: int
    ctx: zmq.Context | None = None
    star: zmq.Socket | None = None  # ROUTER at rank 0, DEALER at workers
    ring_in: zmq.Socket | None = None
    ring_out: zmq.Socket | None = None
    link: LinkEmulation | None = None
    op_timeout: float = 60.0
    limits: CodecLimits = DEFAULT_LIMITS
    algorithm: str = "star"
    wire_ring: bool = True  # rank 0's choice, told to workers in the welcome
    token: str = ""
    ident_of: dict[int, bytes] = field(default_factory=dict)  # rank 0: worker rank -> id
    rank_of: dict[bytes, int] = field(default_factory=dict)  # rank 0: id -> worker rank
    rank_keys: dict[int, str] = field(default_factory=dict)  # rank 0: rank -> its CURVE key
    same_user: bool = False  # ipc sockets (local_socket.py): only this user's messages count
    ring_prev_ident: bytes = b""
    watch: PeerWatch = field(default_factory=PeerWatch)
    closing: threading.Event = field(default_factory=threading.Event)
    seq: int = 0
    dropped: int = 0  # frames from unknown senders, dropped
    hdr: bytearray = field(default_factory=lambda: bytearray(wire.HOT_SIZE))
    _scratch: np.ndarray | None = None
    guards: list = field(default_factory=list)  # ZAP registrations (CURVE), closed last
    ring_curve: dict | None = None  # {"public", "secret"}: the group's ring key pair
    # Fast path (core/comm/fastlink.py): raw TCP star links to ranks on this machine.
    fast: dict[int, FastLink] = field(default_factory=dict)  # peer rank -> link
    fast_order: list[FastLink] = field(default_factory=list)  # rank 0: by rank
    zmq_workers: list[int] = field(default_factory=list)  # rank 0: star ranks on ZeroMQ
    fast_listener: socket.socket | None = None  # rank 0, during set-up only
    fast_offer: object = None  # worker: rank 0's "fast" endpoint entry, unvalidated
    _slots: dict = field(default_factory=dict)
    _views: dict = field(default_factory=dict)  # (data_ptr, numel, dtype) -> (arr, bytes)

    @property
    def prev(self) -> int:
        return (self.rank - 1) % self.world_size

    @property
    def next(self) -> int:
        return (self.rank + 1) % self.world_size

    def scratch(self, count: int, dtype: np.dtype) -> np.ndarray:
        """A reusable receive buffer of `count` elements (grown, never shrunk)."""
        nbytes = count * dtype.itemsize
        if self._scratch is None or self._scratch.nbytes < nbytes:
            self._scratch = np.empty(max(nbytes, 4096), dtype=np.uint8)
        return self._scratch[:nbytes].view(dtype)

    def slots(self, count: int, dtype: np.dtype) -> tuple[np.ndarray, list[memoryview]]:
        """Rank 0's [world_size - 1, count] receive buffer and its rows as byte views,
        cached per size and dtype."""
        key = (count, dtype)
        got = self._slots.get(key)
        if got is None:
            if len(self._slots) > _MAX_VIEWS:  # shapes vary (prefill lengths): keep a few
                self._slots.clear()
            buf = np.empty((self.world_size - 1, count), dtype=dtype)
            got = (buf, [memoryview(row.view(np.uint8)) for row in buf])
            self._slots[key] = got
        return got

    def views(self, t: torch.Tensor) -> tuple[np.ndarray, memoryview]:
        """Flat numpy view and byte view of contiguous `t`, cached per buffer.

        The engine reduces the same few buffers again and again; building the views
        costs more than the rest of a fast-path allreduce's Python. A cached entry keeps
        its storage alive, so no other buffer can take its address while it is cached.
        """
        key = (t.data_ptr(), t.numel(), t.dtype)
        got = self._views.get(key)
        if got is not None and t.is_contiguous():  # cached entries passed check_tensor
            return got
        check_tensor(t)
        if len(self._views) >= _MAX_VIEWS:
            self._views.clear()
        arr = flat_array(t)
        got = (arr, memoryview(arr.view(np.uint8)))
        if arr.nbytes <= _MAX_VIEW_BYTES:  # never pin big (prefill) buffers
            self._views[key] = got
        return got

    def set_fast(self, links: dict[int, FastLink]) -> None:
        """Install the fast links; the other workers stay on the ZeroMQ star."""
        self.fast = links
        self.fast_order = [links[r] for r in sorted(links)]
        self.zmq_workers = [r for r in range(1, self.world_size) if r not in links]

    # -- sending -------------------------------------------------------------------

    def send(self, sock: zmq.Socket, parts: list, trackers: list) -> None:
        """Send one multipart message; big buffers go zero-copy with a tracker.

        The caller waits on `trackers` before it lets anyone modify those buffers.
        """
        if self.link is not None:
            self.link.before_send(sum(len(p) if type(p) is bytes else p.nbytes for p in parts))
        last = len(parts) - 1
        try:
            for i, p in enumerate(parts):
                flags = zmq.SNDMORE if i < last else 0
                if type(p) is not bytes and p.nbytes >= ZERO_COPY_MIN:
                    trackers.append(sock.send(p, flags, copy=False, track=True))
                else:
                    sock.send(p, flags)
        except zmq.Again as e:
            raise PeerError(f"A peer did not take our data within {self.op_timeout:g} s.") from e
        except zmq.ZMQError as e:
            if e.errno == zmq.EHOSTUNREACH:
                raise PeerError("A peer is no longer connected.") from e
            raise

    def wait_sent(self, trackers: list) -> None:
        for tr in trackers:
            tr.wait(self.op_timeout)
        trackers.clear()

    # -- receiving -----------------------------------------------------------------

    def wait_first(self, sock: zmq.Socket, fn, who: str, timeout: float | None):
        """Run the first receive of a message with deadline, close and liveness checks."""
        try:
            return fn()  # the common case: it arrives within one slice
        except zmq.Again:
            pass
        return wait_for(
            fn, timeout=timeout, closing=self.closing, watch=self.watch,
            on_timeout=lambda: PeerError(f"{who} did not answer within {timeout:g} s."))

    def drain(self, sock: zmq.Socket) -> None:
        """Discard the rest of a multipart message."""
        while sock.getsockopt(zmq.RCVMORE):
            sock.recv_into(bytearray())

    def recv_hot(self, sock: zmq.Socket, expect: int, seq: int, nbytes: int) -> None:
        """Receive and check the 16-byte header frame (the first part was ours)."""
        if not sock.getsockopt(zmq.RCVMORE):
            raise ProtocolError("A data-plane message ended early.")
        self.check_hot(sock, sock.recv_into(self.hdr), expect, seq, nbytes)

    def check_hot(self, sock: zmq.Socket, n: int, expect: int, seq: int, nbytes: int) -> None:
        """Check the header just received into self.hdr (n = its reported size)."""
        try:
            kind, s, nb = wire.unpack(self.hdr, n)
        except ProtocolError:
            self.drain(sock)
            raise
        if kind != expect or s != seq or nb != nbytes:
            self.drain(sock)
            raise ProtocolError(
                f"Expected a {wire.Kind(expect).name} message #{seq} of {nbytes} bytes, got "
                f"kind {kind} #{s} of {nb} bytes; the ranks are out of step.")

    def recv_payload(self, sock: zmq.Socket, into: np.ndarray | memoryview) -> None:
        """Receive the last frame of a message straight into `into`; sizes must match."""
        if not sock.getsockopt(zmq.RCVMORE):
            raise ProtocolError("A data-plane message has no payload.")
        n = sock.recv_into(into)
        if n != into.nbytes or sock.getsockopt(zmq.RCVMORE):
            self.drain(sock)
            raise ProtocolError(f"A payload of {n} bytes arrived where {into.nbytes} were "
                                "expected.")

    def close(self) -> None:
        self.closing.set()
        self.watch.close()
        for fl in self.fast.values():
            fl.close()
        self.fast, self.fast_order = {}, []
        if self.fast_listener is not None:
            self.fast_listener.close()
            self.fast_listener = None
        for s in (self.star, self.ring_in, self.ring_out):
            if s is not None:
                s.close(linger=0)
        for g in self.guards:
            g.close()
        self.guards.clear()
        if self.ctx is not None:
            self.ctx.term()
        self.star = self.ring_in = self.ring_out = self.ctx = None
