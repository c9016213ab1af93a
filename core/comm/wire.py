"""The data plane's fixed 16-byte frame header (struct, no msgpack on the hot path).

Every data-plane message starts with this frame:

    magic b"TP" | protocol version u8 | kind u8 | seq u32 | nbytes u64   (little-endian)

Allreduce traffic is then just one raw payload frame whose length must equal `nbytes`
and the size the receiver expects. Session set-up (hello, welcome, ring hello) and step
broadcasts carry a codec message (core/comm/codec.py) after this header.

The layout of this header and of REFUSE (header + one UTF-8 text frame) is frozen
across protocol versions, so a peer of another version can always read why it was
refused.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from core.comm.codec import PROTOCOL_VERSION
from core.errors import ProtocolError

MAGIC = b"TP"
HOT = struct.Struct("<2sBBIQ")
HOT_SIZE = HOT.size  # 16


class Kind(IntEnum):
    """What a data-plane message is; the receiver knows which kinds it expects."""

    HELLO = 1  # worker -> rank 0: codec "hello" {rank, world_size, token, ring, pid}
    WELCOME = 2  # rank 0 -> worker: codec "welcome" {ring: [endpoint per rank], algorithm}
    REFUSE = 3  # either way: one UTF-8 text frame saying why
    READY = 4  # worker -> rank 0: fully wired, no payload
    PARTIAL = 5  # worker -> rank 0: its partial sum (star)
    RESULT = 6  # rank 0 -> worker: the reduced tensor (star)
    RING = 7  # rank -> next rank: one chunk (ring)
    STEP = 8  # rank 0 -> worker: codec "step" message
    RING_HELLO = 9  # rank -> next rank on the ring socket: codec "ring_hello" {rank, token}
    GO = 10  # rank 0 -> worker: every rank is READY, collectives may start
    FAST_HELLO = 11  # worker -> rank 0 on a loopback TCP link: seq = rank, HMAC (fastlink.py)


def pack(kind: Kind, seq: int = 0, nbytes: int = 0) -> bytes:
    """The header frame for one message."""
    return HOT.pack(MAGIC, PROTOCOL_VERSION, kind, seq & 0xFFFFFFFF, nbytes)


def unpack(buf: bytes | bytearray | memoryview, n: int | None = None) -> tuple[int, int, int]:
    """(kind, seq, nbytes) of a header frame of length n; ProtocolError if malformed."""
    if (len(buf) if n is None else n) != HOT_SIZE:
        raise ProtocolError("A data-plane frame header has the wrong size.")
    magic, ver, kind, seq, nbytes = HOT.unpack_from(buf)
    if magic != MAGIC:
        raise ProtocolError("A data-plane frame does not start with our magic bytes.")
    if ver != PROTOCOL_VERSION:
        raise ProtocolError(f"peer speaks protocol {ver}, we speak {PROTOCOL_VERSION}.")
    return kind, seq, nbytes


def peek_kind(buf: bytes | bytearray | memoryview) -> int | None:
    """Kind of a header of any version (for REFUSE), or None if it is not ours at all."""
    if len(buf) != HOT_SIZE or bytes(buf[:2]) != MAGIC:
        return None
    return buf[3]
