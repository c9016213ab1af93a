"""Tensor message codec: a small msgpack header plus raw tensor buffers, one frame each.

Wire layout of one message (a list of ZeroMQ frames):

    frame 0     msgpack map {"v": PROTOCOL_VERSION, "op": str, "meta": map,
                             "tensors": [{"dtype": str, "shape": [int, ...]}, ...]}
    frame 1..n  the raw bytes of tensor i (C order, little-endian host layout)

No pickle and no msgpack extension types: a header can only ever decode to plain
dicts, lists, strings, bytes, numbers, booleans and None, so nothing on the wire can
make us run code. Every header is validated (see `decode`) before a tensor is built:
sizes, counts, nesting depth, dtypes and shapes are bounded (a shape's product with its
zero dimensions counted as 1, so even an empty tensor cannot declare strides torch
cannot compute), and whatever a peer sends, `decode` raises ProtocolError and nothing
else. Error texts quote wire values through `shown` (short, depth-limited).
"""

from __future__ import annotations

import logging
import math
import reprlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import torch
import zmq

from core.errors import ProtocolError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1

# Only plain numeric dtypes: no object, no complex, no quantised types whose layout
# could differ between torch builds.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int8": torch.int8,
    "uint8": torch.uint8,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}

_MAX_NDIM = 8
_MAX_META_DEPTH = 16
_HEADER_KEYS = frozenset({"v", "op", "meta", "tensors"})
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 3, 40, 40, 40
_SHOWN.maxlist = _SHOWN.maxdict = _SHOWN.maxtuple = _SHOWN.maxset = 6
_SHOWN_MAX = 120


def shown(value: Any) -> str:
    """A wire value for an error text: short, depth-limited, never raises."""
    try:
        text = _SHOWN.repr(value)
    except Exception:  # a value reprlib cannot walk: name its type only
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX - 3] + "..."

Buffer = bytes | bytearray | memoryview | zmq.Frame


@dataclass(frozen=True)
class CodecLimits:
    """Upper bounds a received message must respect; anything bigger is refused."""

    max_header_bytes: int = 64 * 1024
    max_total_bytes: int = 256 * 1024 * 1024
    max_tensors: int = 64


DEFAULT_LIMITS = CodecLimits()


@dataclass
class Message:
    """A decoded message: its kind, its small metadata and its tensors."""

    op: str
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: list[torch.Tensor] = field(default_factory=list)


def tensor_buffer(t: torch.Tensor) -> memoryview:
    """A zero-copy byte view of a contiguous CPU tensor (copies only if it must)."""
    if t.device.type != "cpu":
        raise ValueError("only CPU tensors can be sent")
    if not t.is_contiguous():
        t = t.contiguous()  # unavoidable copy: the wire wants C order
    # uint8 view works for every allowed dtype (bfloat16 has no numpy equivalent).
    return memoryview(t.detach().reshape(-1).view(torch.uint8).numpy())


def encode(op: str, meta: dict[str, Any] | None = None,
           tensors: Sequence[torch.Tensor] = ()) -> list[bytes | memoryview]:
    """Frames for one message; tensor frames are views of the tensors, not copies.

    The caller must not modify the tensors until the frames are sent (or sent with
    copy=True). Raises TypeError/ValueError for things we would never send (a bug).
    """
    descs = []
    bufs: list[bytes | memoryview] = []
    for t in tensors:
        name = DTYPE_NAMES.get(t.dtype)
        if name is None:
            raise ValueError(f"dtype {t.dtype} cannot be sent")
        descs.append({"dtype": name, "shape": list(t.shape)})
        bufs.append(tensor_buffer(t))
    header = {"v": PROTOCOL_VERSION, "op": op, "meta": meta or {}, "tensors": descs}
    packed = msgpack.packb(header, use_bin_type=True, datetime=False)
    return [packed, *bufs]


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError("extension types are not allowed")


def _unpack_header(raw: Buffer, limits: CodecLimits) -> dict[str, Any]:
    data = raw.buffer if isinstance(raw, zmq.Frame) else raw
    if len(data) > limits.max_header_bytes:
        raise ProtocolError(
            f"Message header of {len(data)} bytes exceeds the {limits.max_header_bytes}-byte "
            "limit.")
    try:
        header = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True, ext_hook=_no_ext,
            max_ext_len=0,
            max_str_len=limits.max_header_bytes, max_bin_len=limits.max_header_bytes,
            max_array_len=limits.max_header_bytes, max_map_len=limits.max_header_bytes,
        )
    except Exception as e:  # msgpack raises many kinds; all mean "garbage"
        raise ProtocolError(f"Message header is not valid msgpack ({type(e).__name__}).") from e
    if not isinstance(header, dict):
        raise ProtocolError("Message header is not a map.")
    if not all(isinstance(k, str) for k in header):
        raise ProtocolError("Message header has a non-string key.")
    return header


def _check_plain(obj: Any, depth: int = 0) -> None:
    """Reject anything that is not plain data (belt and braces after ext_hook)."""
    if depth > _MAX_META_DEPTH:
        raise ProtocolError("Message metadata is nested too deeply.")
    if obj is None or isinstance(obj, bool | int | float | str | bytes):
        return
    if isinstance(obj, list):
        for x in obj:
            _check_plain(x, depth + 1)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ProtocolError("Message metadata has a non-string key.")
            _check_plain(v, depth + 1)
        return
    raise ProtocolError(f"Message metadata holds a {type(obj).__name__}, which is not allowed.")


def check_version(v: Any) -> None:
    """Refuse a peer of another protocol version with a message naming both."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError("Message header has no valid protocol version.")
    if v != PROTOCOL_VERSION:
        raise ProtocolError(f"peer speaks protocol {v}, we speak {PROTOCOL_VERSION}.")


def _tensor_descs(header: dict[str, Any], n_frames: int,
                  limits: CodecLimits) -> list[tuple[torch.dtype, list[int], int]]:
    descs = header.get("tensors", [])
    if not isinstance(descs, list):
        raise ProtocolError("Message header field 'tensors' is not a list.")
    if len(descs) > limits.max_tensors:
        raise ProtocolError(f"Message declares {len(descs)} tensors, the limit is "
                            f"{limits.max_tensors}.")
    if len(descs) != n_frames:
        raise ProtocolError(f"Message declares {len(descs)} tensors but {n_frames} buffers "
                            "arrived.")
    out = []
    total = 0
    for d in descs:
        if not isinstance(d, dict) or set(d) != {"dtype", "shape"}:
            raise ProtocolError("A tensor description must hold exactly 'dtype' and 'shape'.")
        dtype = DTYPES.get(d["dtype"]) if isinstance(d["dtype"], str) else None
        if dtype is None:
            raise ProtocolError(f"Tensor dtype {shown(d['dtype'])} is not allowed.")
        shape = d["shape"]
        if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                           for s in shape)):
            raise ProtocolError(f"Tensor shape {shown(shape)} is not a list of at most "
                                f"{_MAX_NDIM} non-negative integers.")
        # Zero dimensions count as 1 here: torch computes strides from the other sizes
        # even for an empty tensor, and [0, 2**64 - 1] would overflow them.
        extent = math.prod(max(s, 1) for s in shape) * dtype.itemsize  # Python ints
        if extent > limits.max_total_bytes:
            raise ProtocolError(f"Tensor shape {shown(shape)} exceeds the "
                                f"{limits.max_total_bytes}-byte limit.")
        nbytes = math.prod(shape) * dtype.itemsize
        total += nbytes
        if total > limits.max_total_bytes:
            raise ProtocolError(f"Message tensors exceed the {limits.max_total_bytes}-byte "
                                "limit.")
        out.append((dtype, shape, nbytes))
    return out


def _as_tensor(frame: Buffer, dtype: torch.dtype, shape: list[int], nbytes: int,
               writable: bool) -> torch.Tensor:
    buf = frame.buffer if isinstance(frame, zmq.Frame) else memoryview(frame)
    if buf.nbytes != nbytes:
        raise ProtocolError(f"Tensor of shape {shape} and dtype {DTYPE_NAMES[dtype]} needs "
                            f"{nbytes} bytes but its buffer holds {buf.nbytes}.")
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype)
    if buf.readonly:
        # bytes frames (copy=True receives) are immutable: torch would warn and any
        # write would be undefined behaviour, so take a private copy.
        buf = memoryview(bytearray(buf))
    raw = torch.frombuffer(buf, dtype=torch.uint8)
    if raw.data_ptr() % dtype.itemsize:
        raw = raw.clone()  # misaligned (tiny inline zmq messages): copy to aligned memory
    t = raw.view(dtype).view(shape)
    return t.clone() if writable else t


def decode(frames: Sequence[Buffer], ops: Collection[str],
           limits: CodecLimits = DEFAULT_LIMITS, writable: bool = False) -> Message:
    """Validate and decode one message; any malformation raises ProtocolError.

    `ops` is the allow-list of message kinds the caller accepts. Tensors are built with
    torch.frombuffer on the received frames (zero-copy): they share memory with the frame,
    which they keep alive. With writable=False the caller must treat them as read-only
    when the frames are shared; pass writable=True to get private copies.

    Nothing else escapes: an exception the checks did not foresee is a bug here, logged
    with its traceback (the fuzz tests fail on that log line), and still reaches the
    caller as a ProtocolError, so a receiver that handles ProtocolError stays up.
    """
    try:
        return _decode(frames, ops, limits, writable)
    except ProtocolError:
        raise
    except Exception as e:
        log.error("codec bug: a malformed message raised %s", type(e).__name__, exc_info=True)
        raise ProtocolError(f"Message could not be decoded ({type(e).__name__}).") from None


def _decode(frames: Sequence[Buffer], ops: Collection[str], limits: CodecLimits,
            writable: bool) -> Message:
    if not frames:
        raise ProtocolError("Empty message.")
    header = _unpack_header(frames[0], limits)
    check_version(header.get("v"))
    extra = set(header) - _HEADER_KEYS
    if extra:
        raise ProtocolError(f"Message header has unknown fields {shown(sorted(extra))}.")
    op = header.get("op")
    if not isinstance(op, str) or op not in ops:
        raise ProtocolError(f"Unknown message kind {shown(op)}.")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise ProtocolError("Message header field 'meta' is not a map.")
    _check_plain(meta)
    descs = _tensor_descs(header, len(frames) - 1, limits)
    tensors = [_as_tensor(f, dt, shape, nb, writable)
               for f, (dt, shape, nb) in zip(frames[1:], descs, strict=True)]
    return Message(op, meta, tensors)
