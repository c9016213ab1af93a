"""Shard shipping wire messages: op names, one dataclass per message, and name checks.

The master (sender) sends requests; the worker (receiver) answers each with exactly one
reply echoing the request's `seq`, so the sender can keep a window of requests in flight.

    request        meta                                       tensors   reply
    ship_begin     seq, split_id, manifest (manifest.json dict)   -     ship_have
    ship_chunk     seq, split_id, file, offset               1 uint8   ship_ack
    ship_end_file  seq, split_id, file, sha256                    -     ship_file_ok
    ship_commit    seq, split_id                                  -     ship_committed
    any            (on failure)                                   -     ship_error

    reply          meta
    ship_have      seq, split_id, files {name: {have_bytes, complete}}
    ship_ack       seq, file, size (bytes of the temp file after this chunk)
    ship_file_ok   seq, file
    ship_committed seq, split_id
    ship_error     seq, code (see ERROR_CODES), message, file (or None)

Every name that comes from the wire (split ids, file names) goes through `check_name`:
a name is a single plain path component, so it can never point outside the cache.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from types import NoneType
from typing import Any, ClassVar

import torch

from core.comm.codec import Message, shown
from core.errors import ProtocolError

REQUEST_OPS = frozenset({"ship_begin", "ship_chunk", "ship_end_file", "ship_commit"})
REPLY_OPS = frozenset({"ship_have", "ship_ack", "ship_file_ok", "ship_committed", "ship_error"})
DEFAULT_CHUNK = 1 << 20
MAX_TEXT = 2000  # characters of any string field (names are 128 at most, see check_name)
MAX_CHUNK = 8 << 20
# bad_request: malformed or unsafe message (never retried); hash_mismatch: the file's
# sha256 did not match, its temp file was deleted (re-send it); no_space / io: the
# worker's disk; internal: a bug on the worker.
ERROR_CODES = frozenset({"bad_request", "hash_mismatch", "no_space", "io", "internal"})

# One path component: starts with a letter or digit (so no ".hidden", no "-flag"),
# then letters, digits, '.', '_', '-'. No separators, no NUL, bounded length.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Names Windows maps to devices whatever the extension; refused everywhere for portability.
_WIN_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
)


def check_name(name: object, what: str = "name") -> str:
    """Return `name` if it is one safe path component, else raise ProtocolError."""
    ok = (
        isinstance(name, str)
        and _SAFE_NAME.fullmatch(name) is not None
        and ".." not in name
        and name.split(".")[0].upper() not in _WIN_DEVICES
    )
    if not ok:
        shown = repr(name)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ProtocolError(
            f"{what} {shown} is not a plain name (1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, no '..')."
        )
    return name


def check_sha256(digest: object) -> str:
    if not isinstance(digest, str) or _HEX64.fullmatch(digest) is None:
        raise ProtocolError("sha256 must be 64 lowercase hex digits.")
    return digest


_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "str": str,
    "dict[str, Any]": dict,
    "str | None": (str, NoneType),
}


class _Meta:
    """Mixin: build a message from/to its meta map, checking keys and plain types."""

    op: ClassVar[str]
    n_tensors: ClassVar[int] = 0

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Any:
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        missing = [n for n in names if n not in meta]
        extra = sorted(set(meta) - set(names))
        if missing or extra:
            raise ProtocolError(
                f"{cls.op} needs fields {names}; missing {missing}, unexpected {extra}."
            )
        for f in dataclasses.fields(cls):
            want = _TYPES[str(f.type)]
            v = meta[f.name]
            if not isinstance(v, want) or (isinstance(v, bool) and want is int):
                raise ProtocolError(f"{cls.op} field {f.name!r} has the wrong type.")
            if isinstance(v, str) and len(v) > MAX_TEXT:
                raise ProtocolError(f"{cls.op} field {f.name!r} is longer than {MAX_TEXT} "
                                    "characters.")
            # seq -1 marks an error reply to a request whose own seq was unreadable.
            if f.type == "int" and v < (-1 if f.name == "seq" else 0):
                raise ProtocolError(f"{cls.op} field {f.name!r} is out of range.")
        return cls(**{n: meta[n] for n in names})

    def to_meta(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ShipBegin(_Meta):
    op: ClassVar[str] = "ship_begin"
    seq: int
    split_id: str
    manifest: dict[str, Any]


@dataclass(frozen=True)
class ShipChunk(_Meta):
    """One piece of a file; its bytes travel as one 1-D uint8 tensor frame."""

    op: ClassVar[str] = "ship_chunk"
    n_tensors: ClassVar[int] = 1
    seq: int
    split_id: str
    file: str
    offset: int


@dataclass(frozen=True)
class ShipEndFile(_Meta):
    op: ClassVar[str] = "ship_end_file"
    seq: int
    split_id: str
    file: str
    sha256: str


@dataclass(frozen=True)
class ShipCommit(_Meta):
    op: ClassVar[str] = "ship_commit"
    seq: int
    split_id: str


@dataclass(frozen=True)
class ShipHave(_Meta):
    """files: {name: {"have_bytes": int, "complete": bool}} for every file of the manifest."""

    op: ClassVar[str] = "ship_have"
    seq: int
    split_id: str
    files: dict[str, Any]


@dataclass(frozen=True)
class ShipAck(_Meta):
    op: ClassVar[str] = "ship_ack"
    seq: int
    file: str
    size: int


@dataclass(frozen=True)
class ShipFileOk(_Meta):
    op: ClassVar[str] = "ship_file_ok"
    seq: int
    file: str


@dataclass(frozen=True)
class ShipCommitted(_Meta):
    op: ClassVar[str] = "ship_committed"
    seq: int
    split_id: str


@dataclass(frozen=True)
class ShipError(_Meta):
    op: ClassVar[str] = "ship_error"
    seq: int
    code: str
    message: str
    file: str | None = None


Request = ShipBegin | ShipChunk | ShipEndFile | ShipCommit
Reply = ShipHave | ShipAck | ShipFileOk | ShipCommitted | ShipError
_REQUESTS = {c.op: c for c in (ShipBegin, ShipChunk, ShipEndFile, ShipCommit)}
_REPLIES = {c.op: c for c in (ShipHave, ShipAck, ShipFileOk, ShipCommitted, ShipError)}


def _parse(msg: Message, kinds: dict[str, type]) -> Any:
    cls = kinds.get(msg.op)
    if cls is None:
        raise ProtocolError(f"{msg.op!r} is not a shard shipping message here.")
    if len(msg.tensors) != cls.n_tensors:
        raise ProtocolError(f"{msg.op} carries {len(msg.tensors)} tensors, expected "
                            f"{cls.n_tensors}.")
    return cls.from_meta(msg.meta)


def parse_request(msg: Message) -> tuple[Request, torch.Tensor | None]:
    """A validated request and, for ship_chunk, its 1-D uint8 payload."""
    req = _parse(msg, _REQUESTS)
    data = None
    if isinstance(req, ShipChunk):
        data = msg.tensors[0]
        if data.dtype != torch.uint8 or data.dim() != 1:
            raise ProtocolError("ship_chunk data must be one 1-D uint8 tensor.")
    return req, data


def parse_reply(msg: Message) -> Reply:
    rep = _parse(msg, _REPLIES)
    if isinstance(rep, ShipError) and rep.code not in ERROR_CODES:
        raise ProtocolError(f"ship_error with unknown code {shown(rep.code)}.")
    return rep


def request_seq(meta: dict[str, Any]) -> int:
    """The seq of a request we could not parse, so the error reply still matches (-1 if none)."""
    seq = meta.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else -1
