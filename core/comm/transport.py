"""ZeroMQ socket plumbing shared by the data plane and the control channel.

- Socket options chosen once: linger 0 (close never hangs), a transport-level message
  size cap (libzmq drops a connection sending anything bigger), ZMTP heartbeats (a dead
  peer on a real network is noticed in seconds, not after TCP's minutes).
- Waits are sliced: blocking receives use a short RCVTIMEO, and between slices we check
  the overall deadline, whether close() was requested from another thread, and whether
  a watched peer disconnected. The hot path pays nothing for this: a slice only expires
  when nothing arrived.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import zmq
from zmq.utils.monitor import recv_monitor_message

from core.errors import PeerError

SLICE_S = 0.1  # how often a waiting receive looks up from the socket
HEARTBEAT_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000

T = TypeVar("T")


class GroupClosed(PeerError):
    """close() was called while an operation was waiting."""


def configure(sock: zmq.Socket, max_msg_bytes: int, send_timeout_s: float) -> None:
    """Options every socket of ours gets."""
    sock.linger = 0
    sock.setsockopt(zmq.MAXMSGSIZE, max_msg_bytes)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.rcvtimeo = int(SLICE_S * 1000)
    sock.sndtimeo = int(send_timeout_s * 1000)


def bind_random(sock: zmq.Socket, host: str) -> str:
    """Bind on an ephemeral port of `host`; the endpoint a peer should connect to."""
    sock.bind(f"tcp://{host}:0")
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class PeerWatch:
    """Notices that a peer's TCP connection went away, via libzmq socket monitors.

    Connections are mapped to ranks by file descriptor (learnt from the first message
    each peer sends, see `learn`), or a whole socket is tied to one rank when it only
    ever talks to that rank (a DEALER connected to one peer).
    """

    def __init__(self) -> None:
        self._monitors: list[tuple[zmq.Socket, zmq.Socket, int | None]] = []
        self._fd_rank: dict[tuple[int, int], int] = {}  # (monitor index, fd) -> rank

    def watch(self, sock: zmq.Socket, rank: int | None = None) -> int:
        """Monitor `sock`; `rank` ties every disconnect on it to that rank."""
        mon = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._monitors.append((sock, mon, rank))
        return len(self._monitors) - 1

    def learn(self, index: int, frame: zmq.Frame, rank: int) -> None:
        """Remember that the connection `frame` arrived on belongs to `rank`."""
        try:
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:
            return  # older libzmq: fall back to timeouts
        self._fd_rank[(index, fd)] = rank

    def dead(self) -> int | None:
        """A rank whose connection dropped since the last call, or None."""
        for i, (_sock, mon, rank) in enumerate(self._monitors):
            while True:
                try:
                    ev = recv_monitor_message(mon, zmq.NOBLOCK)
                except zmq.Again:
                    break
                if ev["event"] != zmq.EVENT_DISCONNECTED:
                    continue
                who = rank if rank is not None else self._fd_rank.get((i, ev["value"]))
                if who is not None:
                    return who
        return None

    def close(self) -> None:
        for sock, mon, _ in self._monitors:
            try:
                sock.disable_monitor()
            except zmq.ZMQError:
                pass
            mon.close(linger=0)
        self._monitors.clear()


def wait_for(fn: Callable[[], T], *, timeout: float | None, closing: threading.Event,
             watch: PeerWatch | None, on_timeout: Callable[[], PeerError]) -> T:
    """Call `fn` (a receive on a socket with RCVTIMEO = SLICE_S) until it returns.

    Raises `on_timeout()` after `timeout` seconds (None: wait forever), GroupClosed if
    close() was requested, PeerError if a watched peer disconnected.
    """
    start: float | None = None
    while True:
        try:
            return fn()
        except zmq.Again:
            pass
        if closing.is_set():
            raise GroupClosed("The communication group was closed while waiting for a peer.")
        if watch is not None:
            gone = watch.dead()
            if gone is not None:
                raise PeerError(f"rank {gone} disconnected.")
        now = time.monotonic()
        if start is None:
            start = now - SLICE_S  # the first slice already elapsed
        if timeout is not None and now - start >= timeout:
            raise on_timeout()
