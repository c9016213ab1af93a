"""CommGroup: the engine's one handle on the data plane of its rank process.

    rank 0:   g = CommGroup.master(world_size); send g.endpoints to workers; g.wait_ready()
    rank r:   g = CommGroup.worker(r, world_size, endpoints)
    all:      g.allreduce_(t)   (two per layer)
    rank 0:   g.broadcast_step({"op": "step", "pos": p}, x)
    workers:  meta, x = g.recv_step()

Failure behaviour (the engine relies on it):
- A receive inside a collective waits at most `op_timeout` seconds, then raises
  PeerError naming the silent rank(s); a peer whose connection drops is reported within
  ~0.1 s as PeerError("rank N disconnected.").
- A malformed frame from a peer of the group raises ProtocolError; recv_step's
  BadStep (a whole message dropped, the link still in step) leaves the group usable.
- Frames from anyone who is not a member (no session token, see handshake.py) are
  dropped and counted in `dropped`: they can slow a rank down but never wedge it or get
  into a sum.
- After any error from a collective the ranks are out of step: close the group and
  build a new one. Later calls raise PeerError at once.
- close() may be called from another thread; it interrupts a waiting recv_step (which
  then raises PeerError) and never hangs.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from core.comm import allreduce, broadcast, handshake
from core.comm.codec import DEFAULT_LIMITS, CodecLimits
from core.comm.curve import CurveClientConfig, CurveServerConfig
from core.comm.linkemu import LinkEmulation
from core.comm.plane import DataPlane
from core.errors import PeerError, TpiError

DEFAULT_OP_TIMEOUT = 60.0
DEFAULT_JOIN_TIMEOUT = 60.0
_CLOSE_WAIT_S = 2.0


class CommGroup:
    """One rank's membership of a tensor-parallel group (build with master/worker)."""

    def __init__(self, plane: DataPlane, endpoints: dict[str, Any] | None = None):
        self._p = plane
        self._endpoints = endpoints or {}
        self._lock = threading.Lock()  # held by an operation; close() waits for it
        self._broken: str | None = None
        self._closed = False
        self._ops = (_Op(self, False), _Op(self, True))  # reused: no allocation per call

    # -- construction ------------------------------------------------------------

    @classmethod
    def master(cls, world_size: int, host: str = "127.0.0.1",
               link: LinkEmulation | None = None, *, algorithm: str = "star",
               op_timeout: float = DEFAULT_OP_TIMEOUT,
               limits: CodecLimits = DEFAULT_LIMITS,
               curve: CurveServerConfig | None = None,
               transport: str = "auto", ring: bool = True,
               rank_keys: dict[int, str] | None = None,
               ipc_dir: str | None = None) -> CommGroup:
        """Rank 0: bind on ephemeral ports of `host`; hand `endpoints` to the workers.

        With `curve`, every link to another device is CurveZMQ: the star admits only
        `curve.allow`ed keys. `transport` "auto" puts the star links of workers on this
        machine on raw loopback TCP (core/comm/fastlink.py); "zmq" keeps them on ZeroMQ.
        `ring=False` (star groups only) skips the worker-to-worker ring links: the group
        then needs only each worker to reach rank 0, as on a home network where two
        devices on different subnets cannot reach each other.
        `rank_keys` (with `curve`) binds each worker rank to the CURVE key of the device
        (or local rank process) it was planned for: a hello with another key is refused.
        `ipc_dir` (every worker a process of this machine and user): the star and ring
        sockets are Unix sockets in that private directory (core/comm/local_socket.py).
        """
        if world_size < 1:
            raise ValueError("world_size must be >= 1")
        if not ring and algorithm == "ring":
            raise ValueError("a ring group needs its ring links")
        plane, endpoints = handshake.open_master(world_size, host, link, algorithm,
                                                 op_timeout, limits, curve, transport,
                                                 rank_keys, ipc_dir)
        plane.wire_ring = ring
        return cls(plane, endpoints)

    @classmethod
    def worker(cls, rank: int, world_size: int, endpoints: dict[str, Any],
               link: LinkEmulation | None = None, *, host: str = "127.0.0.1",
               op_timeout: float = DEFAULT_OP_TIMEOUT,
               join_timeout: float = DEFAULT_JOIN_TIMEOUT,
               limits: CodecLimits = DEFAULT_LIMITS,
               curve: CurveClientConfig | None = None, ipc: bool = False) -> CommGroup:
        """Rank r > 0: join the group; returns once rank 0 admitted us and the ring is wired.

        `curve` is required when rank 0 made an encrypted group (its key is the server key).

        `host` is the local address our ring socket binds to (reachable by rank r - 1).
        `ipc`: rank 0 is a process of this user on this machine (it reached us over an
        ipc control socket), so its endpoints may be ipc:// paths.
        """
        plane = handshake.open_worker(rank, world_size, endpoints, host, link, op_timeout,
                                      join_timeout, limits, curve, ipc)
        return cls(plane)

    def wait_ready(self, timeout: float = DEFAULT_JOIN_TIMEOUT) -> None:
        """Rank 0: block until every worker joined; PeerError naming the missing ranks."""
        if self._p.rank != 0:
            return
        with self._op():
            handshake.master_wait_ready(self._p, self._endpoints.get("ring0", ""), timeout)

    # -- properties ----------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self._p.rank

    @property
    def world_size(self) -> int:
        return self._p.world_size

    @property
    def endpoints(self) -> dict[str, Any]:
        """What a worker needs to join (plain str/int dict, msgpack/JSON serialisable).

        Holds the session token: send it only over the (authenticated) control channel.
        """
        return dict(self._endpoints)

    @property
    def algorithm(self) -> str:
        return self._p.algorithm

    @property
    def local_links(self) -> list[int]:
        """Peer ranks whose star link is the fast loopback TCP path (not ZeroMQ)."""
        return sorted(self._p.fast)

    @property
    def dropped(self) -> int:
        """Frames from non-members dropped so far."""
        return self._p.dropped

    # -- collectives ---------------------------------------------------------------

    def allreduce_(self, t: torch.Tensor, algorithm: str | None = None) -> torch.Tensor:
        """Sum `t` (contiguous CPU float) across all ranks in place and return it.

        Every rank must call it with the same shape, dtype and algorithm.
        """
        if self._p.world_size == 1:
            return t
        with self._op():
            return allreduce.allreduce_(self._p, t, algorithm)

    def broadcast_step(self, meta: dict[str, Any], t: torch.Tensor | None = None) -> None:
        """Rank 0: send a step header (e.g. {"op": "step", "pos": 0}) and optional tensor."""
        if self._p.world_size == 1:
            return
        with self._op():
            broadcast.send_step(self._p, meta, t)

    def recv_step(self, timeout: float | None = None
                  ) -> tuple[dict[str, Any], torch.Tensor | None]:
        """Worker: the next step from rank 0; StepTimeout (a PeerError) after `timeout` s.

        The tensor shares memory with the received frame (no copy) and is writable.
        """
        if self._p.rank == 0:
            raise RuntimeError("rank 0 sends steps, it does not receive them")
        with self._op(breaks_on_timeout=False):
            return broadcast.recv_step(self._p, timeout)

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Release the sockets (linger 0). Safe to call twice and from another thread."""
        if self._closed:
            return
        self._p.closing.set()  # a waiting operation notices within one slice (0.1 s)
        got = self._lock.acquire(timeout=_CLOSE_WAIT_S)
        try:
            if not self._closed:
                self._closed = True
                self._p.close()
        finally:
            if got:
                self._lock.release()

    def __enter__(self) -> CommGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _op(self, breaks_on_timeout: bool = True) -> _Op:
        if self._closed or self._p.closing.is_set():
            raise PeerError("The communication group is closed.")
        if self._broken:
            raise PeerError(f"The communication group failed earlier ({self._broken}); "
                            "rebuild it.")
        return self._ops[breaks_on_timeout]


class _Op:
    """Holds the group lock for one operation and marks the group broken on failure."""

    __slots__ = ("_g", "_breaks_on_timeout")

    def __init__(self, g: CommGroup, breaks_on_timeout: bool):
        self._g, self._breaks_on_timeout = g, breaks_on_timeout

    def __enter__(self) -> None:
        self._g._lock.acquire()

    def __exit__(self, et: type | None, e: BaseException | None, tb: object) -> None:
        self._g._lock.release()
        if e is None or isinstance(e, ValueError | RuntimeError):
            return  # success, or a caller bug detected before anything was sent
        if (isinstance(e, broadcast.StepTimeout | broadcast.BadStep)
                and not self._breaks_on_timeout):
            return  # nothing, or one whole bad message, arrived: still in step
        self._g._broken = str(e).rstrip(".") if isinstance(e, TpiError) else type(e).__name__
