"""Worker side of shard shipping: turn one request message into one reply.

`serve_shipping` is what the worker daemon's control loop calls for any "ship_*" op; it
never raises for anything a peer can send (a bad name, a wrong offset, a full disk): the
peer gets a `ship_error` reply naming the problem and the worker carries on.
`serve_router` is a ready-made loop over a ROUTER socket (used by tests and by a worker
that gives shipping its own socket); the socket comes from the caller, so it may be a
CURVE-secured one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from core.cluster.shard_cache import HashMismatch, NoSpace, ShardCache
from core.cluster.ship_messages import (
    MAX_TEXT,
    ShipAck,
    ShipBegin,
    ShipChunk,
    ShipCommit,
    ShipCommitted,
    ShipEndFile,
    ShipError,
    ShipFileOk,
    ShipHave,
    parse_request,
    request_seq,
)
from core.comm.codec import Message
from core.comm.control import BadMessage
from core.errors import PeerError, ProtocolError, TpiError

log = logging.getLogger(__name__)

ReplyFrame = tuple[str, dict[str, Any]]
_MAX_FILE_ECHO = 128  # a longer "file" is no shard name: not echoed back


def _text(e: object) -> str:
    """An error text that fits a ship_error's message field."""
    text = str(e)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


def serve_shipping(cache: ShardCache, msg: Message) -> ReplyFrame:
    """Handle one ship_* request; returns (reply op, reply meta). Never raises for bad input."""
    seq = request_seq(msg.meta)
    file = msg.meta.get("file")
    file = file if isinstance(file, str) and len(file) <= _MAX_FILE_ECHO else None
    try:
        req, data = parse_request(msg)
        rep = _handle(cache, req, data)
    except HashMismatch as e:
        rep = ShipError(seq, "hash_mismatch", _text(e), e.file)
    except NoSpace as e:
        rep = ShipError(seq, "no_space", _text(e), None)
    except ProtocolError as e:
        rep = ShipError(seq, "bad_request", _text(e), file)
    except TpiError as e:
        rep = ShipError(seq, "io", _text(e), file)
    except OSError as e:
        rep = ShipError(seq, "io", _text(f"The worker could not write its shard cache ({e})."),
                        file)
    except Exception as e:  # a bug must not take the worker down; say so, log the trace
        log.exception("shard shipping failed on %s", msg.op)
        rep = ShipError(seq, "internal", f"Internal error on the worker ({type(e).__name__}).",
                        file)
    return rep.op, rep.to_meta()


def _handle(cache: ShardCache, req: Any, data: Any) -> Any:
    if isinstance(req, ShipChunk):
        size = cache.chunk(req.split_id, req.file, req.offset, data.numpy().data)
        return ShipAck(req.seq, req.file, size)
    if isinstance(req, ShipBegin):
        have = cache.begin(req.split_id, req.manifest)
        files = {f: {"have_bytes": h.have_bytes, "complete": h.complete} for f, h in have.items()}
        return ShipHave(req.seq, req.split_id, files)
    if isinstance(req, ShipEndFile):
        cache.end_file(req.split_id, req.file, req.sha256)
        return ShipFileOk(req.seq, req.file)
    if isinstance(req, ShipCommit):
        cache.commit(req.split_id)
        return ShipCommitted(req.seq, req.split_id)
    raise ProtocolError(f"Unhandled shipping request {type(req).__name__}.")


class RouterLike(Protocol):
    """What serve_router needs: core.comm.control.ControlServer has it."""

    def recv(self, timeout: float | None = None) -> tuple[bytes, Message] | None: ...

    def send(self, identity: bytes, op: str, meta: dict[str, Any] | None = None,
             tensors: Any = ()) -> None: ...


def serve_router(server: RouterLike, cache: ShardCache,
                 stop: threading.Event | Callable[[], bool], poll_s: float = 0.1) -> None:
    """Answer ship_* requests on `server` until `stop` is set (or returns True).

    A malformed frame (refused by the codec) still gets a ship_error reply; a peer that
    vanished before its reply is simply skipped.
    """
    should_stop = stop.is_set if isinstance(stop, threading.Event) else stop
    while not should_stop():
        try:
            got = server.recv(timeout=poll_s)
        except BadMessage as e:
            if e.identity is not None:
                rep = ShipError(-1, "bad_request", _text(e), None)
                _reply(server, e.identity, rep.op, rep.to_meta())
            continue
        if got is None:
            continue
        ident, msg = got
        op, meta = serve_shipping(cache, msg)
        _reply(server, ident, op, meta)


def _reply(server: RouterLike, ident: bytes, op: str, meta: dict[str, Any]) -> None:
    try:
        server.send(ident, op, meta)
    except PeerError:
        log.info("shipping peer left before its reply")
