"""The pairing port's wire format, and the limits on what a stranger can make us hold.

The pairing port faces everyone on the network before any key is trusted, so it is not
ZeroMQ (libzmq keeps every frame of an unfinished multipart message: a stranger could
grow a worker by a gigabyte). It is plain TCP carrying a few length-prefixed frames:

    4 bytes   N, big-endian, 1 <= N <= MAX_FRAME
    N bytes   a msgpack map {"v": protocol version, "op": str, "meta": map}

A length is checked before a byte of its frame is read, reads never ask for more than
the current frame still needs, and a connection is closed once it passes its byte,
frame, idle or lifetime limit; both sides (the worker's server and the app's client)
use the same rules, so neither can be made to hold more than a few KB per connection.
No pickle and no msgpack extension types: a frame decodes to plain data or is refused.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import msgpack

from core.comm.codec import PROTOCOL_VERSION, shown
from core.errors import ProtocolError

MAX_FRAME = 4096  # a hello is ~100 bytes, an info answer ~400
LENGTH = struct.Struct(">I")
_HEADER_KEYS = frozenset({"v", "op", "meta"})
_MAX_DEPTH = 3  # meta -> txt -> values


@dataclass(frozen=True)
class Limits:
    """What one pairing port tolerates. Defaults are the worker's and the client's."""

    max_frame: int = MAX_FRAME
    conn_bytes: int = 16 * 1024  # everything one connection may send us
    conn_frames: int = 4  # info, hello, confirm: a pairing needs 2
    conn_seconds: float = 20.0  # lifetime of a connection, whatever it does
    idle_seconds: float = 5.0  # silence before a connection is dropped
    max_conns: int = 32  # open connections, all addresses together
    max_conns_per_addr: int = 4  # open connections from one address (IPv6: one /64)
    conns_per_addr: int = 30  # new connections from one address per `conn_window`
    conn_window: float = 60.0  # seconds
    hellos_per_addr: int = 10  # pairing attempts (each a SPAKE2) from one address per
    hellos_total: int = 60  # ... and from everyone together per `hello_window`
    hello_window: float = 600.0  # seconds
    max_addresses: int = 4096  # addresses remembered for the rates above


DEFAULT_LIMITS = Limits()


class WireError(ProtocolError):
    """A frame broke the format or a limit; `version` is set when the peer speaks
    another protocol version (so the refusal can name both)."""

    def __init__(self, message: str, version: int | None = None) -> None:
        super().__init__(message)
        self.version = version


@dataclass(frozen=True)
class Message:
    op: str
    meta: dict[str, Any]


def pack(op: str, meta: dict[str, Any] | None = None) -> bytes:
    """One frame, length prefix included. ValueError for a message we must never send."""
    body = msgpack.packb({"v": PROTOCOL_VERSION, "op": op, "meta": meta or {}},
                         use_bin_type=True, datetime=False)
    if len(body) > MAX_FRAME:
        raise ValueError(f"pairing message {op!r} of {len(body)} bytes is over {MAX_FRAME}")
    return LENGTH.pack(len(body)) + body


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError("extension types are not allowed")


def _plain(obj: Any, depth: int = 0) -> bool:
    if obj is None or isinstance(obj, bool | int | float | str | bytes):
        return True
    if depth >= _MAX_DEPTH:
        return False
    if isinstance(obj, list):
        return all(_plain(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in obj.items())
    return False


def unpack(body: bytes, ops: frozenset[str]) -> Message:
    """Decode and validate one frame's body (its length was already checked)."""
    if len(body) > MAX_FRAME:
        raise WireError(f"a {len(body)}-byte message is over the {MAX_FRAME}-byte limit")
    try:
        header = msgpack.unpackb(body, raw=False, strict_map_key=True, ext_hook=_no_ext,
                                 max_ext_len=0, max_str_len=MAX_FRAME, max_bin_len=MAX_FRAME,
                                 max_array_len=MAX_FRAME, max_map_len=MAX_FRAME)
    except Exception as e:  # msgpack raises many kinds; all mean garbage
        raise WireError(f"not a pairing message (invalid msgpack: {type(e).__name__})") from e
    if not isinstance(header, dict):
        raise WireError("not a pairing message (not a map)")
    v = header.get("v")
    if not isinstance(v, int) or isinstance(v, bool):
        raise WireError("not a pairing message (no protocol version)")
    if v != PROTOCOL_VERSION:
        raise WireError(f"speaks protocol {v}, not {PROTOCOL_VERSION}", version=v)
    op, meta = header.get("op"), header.get("meta", {})
    if not set(header) <= _HEADER_KEYS:
        raise WireError("malformed pairing message (unknown fields)")
    if not isinstance(op, str) or op not in ops:
        # Quoted through shown(): str() of an op nested ~1000 lists deep (msgpack decodes
        # up to 1024) raised RecursionError past every handler but the server's last one.
        raise WireError(f"unexpected pairing message {shown(op)}")
    if not isinstance(meta, dict) or not _plain(meta):
        raise WireError("malformed pairing message (its fields are not plain data)")
    return Message(op, meta)


def frame_length(prefix: bytes, max_frame: int = MAX_FRAME) -> int:
    """The length a 4-byte prefix announces, refused when 0 or over `max_frame`."""
    (n,) = LENGTH.unpack(prefix)
    if n == 0 or n > max_frame:
        raise WireError(f"announced a {n}-byte message; a pairing message holds 1 to "
                        f"{max_frame} bytes")
    return n


class FrameParser:
    """Incremental frame reader for a non-blocking socket (the server side).

    `want()` is how many bytes to recv next: never more than the current frame still
    needs, so the buffer never holds more than one frame. `feed()` returns a complete
    body or None, and raises WireError on a bad length or past `conn_bytes`."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.received = 0
        self._buf = bytearray()
        self._need = LENGTH.size  # bytes that complete the prefix, then the body
        self._body = False

    def want(self) -> int:
        return self._need - len(self._buf)

    def feed(self, data: bytes) -> bytes | None:
        self.received += len(data)
        if self.received > self.limits.conn_bytes:
            raise WireError(f"sent more than {self.limits.conn_bytes} bytes")
        if len(data) > self.want():
            raise WireError("read past a frame")  # a caller bug: recv(want()) never does
        self._buf += data
        if len(self._buf) < self._need:
            return None
        if not self._body:
            self._need = frame_length(bytes(self._buf), self.limits.max_frame)
            self._buf.clear()
            self._body = True
            return None
        body = bytes(self._buf)
        self._buf.clear()
        self._need, self._body = LENGTH.size, False
        return body


class FrameSocket:
    """Blocking frames over one connected socket with a deadline (the client side).

    Everything it reads is bounded by `limits.conn_bytes`, and every wait by the
    deadline, so a fake worker can neither grow us nor hold us."""

    def __init__(self, sock: socket.socket, deadline: float,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.sock = sock
        self.deadline = deadline
        self.limits = limits
        self.received = 0

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def send(self, frame: bytes) -> None:
        self.sock.settimeout(self._left())
        self.sock.sendall(frame)

    def _exactly(self, n: int) -> bytes:
        if self.received + n > self.limits.conn_bytes:
            raise WireError(f"sent more than {self.limits.conn_bytes} bytes")
        buf = bytearray()
        while len(buf) < n:
            self.sock.settimeout(self._left())
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError
            buf += chunk
            self.received += len(chunk)
        return bytes(buf)

    def recv(self) -> bytes:
        """The next frame's body; TimeoutError, WireError or ConnectionError."""
        prefix = self._exactly(LENGTH.size)
        if prefix == b"\xff\0\0\0":  # how libzmq's greeting starts: a worker from before
            raise WireError("speaks the older ZeroMQ pairing protocol", version=-1)
        return self._exactly(frame_length(prefix, self.limits.max_frame))
