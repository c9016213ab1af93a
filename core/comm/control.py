"""Control channel: ROUTER at rank 0, one DEALER per worker, codec messages both ways.

Generic on purpose: the engine and the cluster layer define the ops ("hello", "setup",
"ready", "error", "bye", ...) and pass them as the allow-list; anything else is refused
as a ProtocolError. Each object owns its sockets and must be used from one thread.
With `curve=` (see core/comm/curve.py) the channel is CurveZMQ-encrypted and the server
admits only the keys its allow-list accepts; `ControlServer.last_peer_key` then names
the (authenticated) key of the last message's sender. With `ipc_dir` (see
core/comm/local_socket.py) the server listens on a Unix socket in that private
directory instead of TCP, and refuses any message whose sender is another user.

    server = ControlServer(ops={"hello", "ready", "error", "bye"})
    client = ControlClient(server.endpoint, ops={"setup", "bye"})
    client.send("hello", {"rank": 1, "version": 1, "pid": 123})
    peer, msg = server.recv(timeout=5)        # None on timeout
    server.send(peer, "setup", {...}, [tensor])
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
import zmq

from core.comm import local_socket
from core.comm.codec import DEFAULT_LIMITS, CodecLimits, Message, decode, encode
from core.comm.curve import (
    CurveClientConfig,
    CurveServerConfig,
    ZapGuard,
    make_curve_client,
    make_curve_server,
    peer_key,
)
from core.comm.plane import ZERO_COPY_MIN
from core.comm.transport import bind_random, configure
from core.errors import PeerError, ProtocolError

_HEADER_MARGIN = 64 * 1024
_SEND_TIMEOUT_S = 30.0


class BadMessage(ProtocolError):
    """A malformed control message; `identity` says which peer sent it (server side)."""

    def __init__(self, message: str, identity: bytes | None = None):
        super().__init__(message)
        self.identity = identity


def _send(sock: zmq.Socket, prefix: list[bytes], op: str, meta: dict[str, Any] | None,
          tensors: Sequence[torch.Tensor]) -> None:
    frames = [*prefix, *encode(op, meta, tensors)]
    last = len(frames) - 1
    trackers = []
    try:
        for i, f in enumerate(frames):
            flags = zmq.SNDMORE if i < last else 0
            if isinstance(f, memoryview) and f.nbytes >= ZERO_COPY_MIN:
                trackers.append(sock.send(f, flags, copy=False, track=True))
            else:
                sock.send(f, flags)
        for tr in trackers:  # the caller may modify its tensors once we return
            tr.wait(_SEND_TIMEOUT_S)
    except zmq.Again as e:
        raise PeerError(f"A peer did not take a control message within {_SEND_TIMEOUT_S:g} s."
                        ) from e
    except zmq.ZMQError as e:
        if e.errno == zmq.EHOSTUNREACH:
            raise PeerError("That peer is no longer connected to the control channel.") from e
        raise


def _poll(sock: zmq.Socket, timeout: float | None) -> bool:
    return bool(sock.poll(None if timeout is None else int(timeout * 1000), zmq.POLLIN))


class _Endpoint:
    def __init__(self, kind: int, ops: Collection[str], limits: CodecLimits):
        self.ops = frozenset(ops)
        self.limits = limits
        self._ctx = zmq.Context(io_threads=1)
        self.sock = self._ctx.socket(kind)
        configure(self.sock, limits.max_total_bytes + _HEADER_MARGIN, _SEND_TIMEOUT_S)
        self.sock.rcvtimeo = -1  # we poll before receiving
        self._guard: ZapGuard | None = None

    def close(self) -> None:
        """Release the socket at once (linger 0)."""
        if self._ctx is not None:
            self.sock.close(linger=0)
            if self._guard is not None:
                self._guard.close()
            self._ctx.term()
            self._ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ControlServer(_Endpoint):
    """Rank 0's side: many workers, each addressed by its routing identity."""

    def __init__(self, host: str = "127.0.0.1", ops: Collection[str] = (),
                 limits: CodecLimits = DEFAULT_LIMITS, *,
                 curve: CurveServerConfig | None = None, port: int = 0,
                 ipc_dir: str | None = None):
        super().__init__(zmq.ROUTER, ops, limits)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.last_peer_key: str | None = None
        self.same_user = ipc_dir is not None
        if curve is not None:
            self._guard = make_curve_server(self.sock, curve.identity, curve.allow)
        if ":" in host:
            self.sock.ipv6 = True
        try:
            if ipc_dir is not None:
                self.endpoint = local_socket.endpoint(ipc_dir, "control")
                self.sock.bind(self.endpoint)
            elif port:
                h = f"[{host}]" if ":" in host else host
                self.sock.bind(f"tcp://{h}:{port}")
                self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                self.endpoint = bind_random(self.sock, host)
        except zmq.ZMQError:
            self.close()
            raise

    def recv(self, timeout: float | None = None) -> tuple[bytes, Message] | None:
        """Next (peer identity, message); None after `timeout` s; BadMessage if malformed."""
        if not _poll(self.sock, timeout):
            return None
        frames = self.sock.recv_multipart(copy=False)
        ident = frames[0].bytes
        if self.same_user and (len(frames) < 2 or not local_socket.from_this_user(frames[1])):
            raise BadMessage("a message from another user of this computer", ident)
        if self._guard is not None and len(frames) > 1:
            self.last_peer_key = peer_key(frames[1])
        try:
            return ident, decode(frames[1:], self.ops, self.limits)
        except ProtocolError as e:
            raise BadMessage(str(e), ident) from None

    def send(self, identity: bytes, op: str, meta: dict[str, Any] | None = None,
             tensors: Sequence[torch.Tensor] = ()) -> None:
        """Send to one peer; PeerError if it is not connected."""
        _send(self.sock, [identity], op, meta, tensors)


class ControlClient(_Endpoint):
    """A worker's side: one connection to rank 0."""

    def __init__(self, endpoint: str, ops: Collection[str] = (),
                 limits: CodecLimits = DEFAULT_LIMITS, *,
                 curve: CurveClientConfig | None = None):
        super().__init__(zmq.DEALER, ops, limits)
        if curve is not None:
            make_curve_client(self.sock, curve.identity, curve.server_public_key)
        if endpoint.startswith("tcp://["):
            self.sock.ipv6 = True
        self.sock.connect(endpoint)

    def send(self, op: str, meta: dict[str, Any] | None = None,
             tensors: Sequence[torch.Tensor] = ()) -> None:
        _send(self.sock, [], op, meta, tensors)

    def recv(self, timeout: float | None = None) -> Message | None:
        """Next message from rank 0; None after `timeout` s; BadMessage if malformed."""
        if not _poll(self.sock, timeout):
            return None
        frames = self.sock.recv_multipart(copy=False)
        try:
            return decode(frames, self.ops, self.limits)
        except ProtocolError as e:
            raise BadMessage(str(e)) from None
