"""Master side of shard shipping: send one rank dir to a worker's shard cache.

`ship_rank` is transport-agnostic: it talks through `send(op, meta, tensors)` and
`recv(timeout) -> Message | None`, which a ControlClient (a DEALER connected to the
worker, possibly CURVE-secured) provides as is. It asks the worker what it already has
(ship_begin), skips complete files, resumes partial ones from their size, and streams
the rest in chunks with a window of requests in flight, so one round trip per chunk is
not paid on a slow link. Each request gets exactly one reply with the same seq.

An exception raised by the `progress` callback aborts the ship (that is how a Cancel
button works); shipping again later resumes where it stopped. Each progress event carries
the smoothed rate and time left of core.cluster.transfer_rate, measured on `clock`.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch

from core.cluster.ship_messages import (
    DEFAULT_CHUNK,
    MAX_CHUNK,
    ShipAck,
    ShipBegin,
    ShipChunk,
    ShipCommit,
    ShipCommitted,
    ShipEndFile,
    ShipError,
    ShipFileOk,
    ShipHave,
    check_name,
    parse_reply,
)
from core.cluster.transfer_rate import Clock, TransferRate
from core.comm.codec import Message
from core.errors import PeerError, ProtocolError, ShardError
from core.shard.manifest import BlockInfo, Manifest, load_manifest, verify_block

Send = Callable[[str, dict[str, Any], Sequence[torch.Tensor]], None]
Recv = Callable[[float], Message | None]
DEFAULT_WINDOW = 8
_DRAIN_S = 2.0


@dataclass(frozen=True)
class ShipProgress:
    """One progress event; bytes_done counts bytes the worker holds (skipped ones too).

    `rate_bps` is bytes/s over the last few seconds (None for the first second) and
    `eta_s` the seconds left at that rate (None until there is a rate, or at 0 B/s).
    """

    file: str
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    rate_bps: float | None
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return self.bytes_done / self.bytes_total if self.bytes_total else 1.0


@dataclass(frozen=True)
class ShipResult:
    """What one ship did: bytes actually sent (resumed and skipped bytes excluded)."""

    split_id: str
    bytes_sent: int
    files_sent: int
    files_skipped: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / self.seconds / 1e6 if self.seconds > 0 else 0.0


def split_id_for(rank_dir: Path) -> str:
    """The worker-side name of a split rank dir: '<split folder>-rank{r}'."""
    rank_dir = Path(rank_dir)
    return check_name(f"{rank_dir.parent.name}-{rank_dir.name}", "split id")


def ship_rank(send: Send, recv: Recv, rank_dir: Path, split_id: str,
              progress: Callable[[ShipProgress], None] | None = None, *,
              chunk_size: int = DEFAULT_CHUNK, window: int = DEFAULT_WINDOW,
              timeout: float = 60.0, max_retries: int = 2,
              clock: Clock = time.monotonic) -> ShipResult:
    """Ship `rank_dir` (a split rank dir with its manifest) to the worker as `split_id`.

    Raises ShardError (local shard damaged, worker disk full or a file keeps arriving
    damaged), ProtocolError (the worker refused a request) or PeerError (no answer within
    `timeout` s). `max_retries` is how often one file is re-sent after a hash mismatch.
    `clock` times the transfer (its rate, time left and seconds).
    """
    if not 0 < chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk_size must be 1..{MAX_CHUNK}")
    if window < 1:
        raise ValueError("window must be at least 1")
    check_name(split_id, "split id")
    return _Shipper(send, recv, Path(rank_dir), split_id, progress, chunk_size, window,
                    timeout, max_retries, clock).run()


@dataclass
class _Pending:
    req: ShipChunk | ShipEndFile
    nbytes: int = 0


@dataclass
class _Shipper:
    send: Send
    recv: Recv
    rank_dir: Path
    split_id: str
    progress: Callable[[ShipProgress], None] | None
    chunk_size: int
    window: int
    timeout: float
    max_retries: int
    clock: Clock
    # A random seq base, so replies left over from an aborted ship on the same socket
    # cannot be mistaken for ours.
    seq: int = field(default_factory=lambda: random.randrange(1 << 30))
    pending: dict[int, _Pending] = field(default_factory=dict)
    jobs: deque[tuple[BlockInfo, int]] = field(default_factory=deque)
    retries: Counter[str] = field(default_factory=Counter)
    blocks: dict[str, BlockInfo] = field(default_factory=dict)
    bytes_done: int = 0
    bytes_total: int = 0
    bytes_sent: int = 0
    files_done: int = 0
    files_sent: int = 0
    files_total: int = 0
    t0: float = 0.0
    meter: TransferRate = field(init=False)

    def __post_init__(self) -> None:
        self.meter = TransferRate(self.clock)

    def run(self) -> ShipResult:
        self.t0 = self.clock()
        manifest = load_manifest(self.rank_dir)
        for b in manifest.blocks:
            verify_block(self.rank_dir, b, full=False)  # sizes only: hashes are checked as sent
        skipped = self._begin(manifest)
        self._emit("")
        self._stream()
        seq = self._request(ShipCommit(self._next(), self.split_id))
        rep = self._reply_to(seq)
        if not isinstance(rep, ShipCommitted):
            raise ProtocolError(f"The worker answered ship_commit with {rep.op}.")
        self._emit("")
        return ShipResult(self.split_id, self.bytes_sent, self.files_sent, skipped,
                          self.clock() - self.t0)

    # ---- steps -------------------------------------------------------------------------

    def _begin(self, manifest: Manifest) -> int:
        seq = self._request(ShipBegin(self._next(), self.split_id, manifest.to_dict()))
        rep = self._reply_to(seq)
        if not isinstance(rep, ShipHave):
            raise ProtocolError(f"The worker answered ship_begin with {rep.op}.")
        files = self.blocks = {b.file: b for b in manifest.blocks}
        if set(rep.files) != set(files):
            raise ProtocolError("The worker's ship_have does not list the manifest's files.")
        self.bytes_total = manifest.total_bytes
        skipped = 0
        for f, b in files.items():
            have, complete = _have(rep.files[f], b)
            if complete:
                skipped += 1
                self.bytes_done += b.bytes
            else:
                self.bytes_done += have
                self.jobs.append((b, have))
        self.files_total = len(files)
        self.files_done = skipped
        return skipped

    def _stream(self) -> None:
        """Send chunks and end-of-file markers, at most `window` unanswered at a time."""
        gen: Iterator[ShipChunk | ShipEndFile] = self._requests()
        while True:
            while len(self.pending) < self.window:
                if next(gen, None) is None:  # the generator sends as it yields
                    break
            if not self.pending:
                if not self.jobs:
                    return
                gen = self._requests()  # a file was queued again after a hash mismatch
                continue
            self._handle(*self._reply())

    def _requests(self) -> Iterator[ShipChunk | ShipEndFile]:
        """Sends as it goes (so reading overlaps the worker's writing); yields each request."""
        while self.jobs:
            b, start = self.jobs.popleft()
            # Hash what we send when we send it all, so a damaged local copy is caught here
            # rather than by the worker over and over.
            h = hashlib.sha256() if start == 0 else None
            with open(self.rank_dir / b.file, "rb") as f:
                f.seek(start)
                off = start
                while off < b.bytes:
                    buf = bytearray(min(self.chunk_size, b.bytes - off))
                    if f.readinto(buf) != len(buf):
                        raise ShardError(f"shard file {b.file} changed while it was being sent; "
                                         "ship again")
                    if h is not None:
                        h.update(buf)
                    req = ShipChunk(self._next(), self.split_id, b.file, off)
                    self._request(req, [torch.frombuffer(buf, dtype=torch.uint8)], len(buf))
                    off += len(buf)
                    yield req
            if h is not None and h.hexdigest() != b.sha256:
                raise ShardError(f"shard file {self.rank_dir.name}/{b.file} on this device is "
                                 f"corrupt (sha256 mismatch); delete {self.rank_dir} to re-split")
            req = ShipEndFile(self._next(), self.split_id, b.file, b.sha256)
            self._request(req)
            yield req

    def _handle(self, p: _Pending, rep: Any) -> None:
        req = p.req
        if isinstance(rep, ShipError):
            if rep.code == "hash_mismatch" and isinstance(req, ShipEndFile):
                self._retry(req.file)
                return
            self._fail(rep)
        if isinstance(req, ShipChunk) and isinstance(rep, ShipAck) and rep.file == req.file:
            self.bytes_done += p.nbytes
            self.bytes_sent += p.nbytes
            self._emit(req.file)
        elif isinstance(req, ShipEndFile) and isinstance(rep, ShipFileOk) and rep.file == req.file:
            self.files_done += 1
            self.files_sent += 1
            self._emit(req.file)
        else:
            raise ProtocolError(f"The worker answered {req.op} with an unexpected {rep.op}.")

    def _retry(self, file: str) -> None:
        self.retries[file] += 1
        if self.retries[file] > self.max_retries:
            raise ShardError(f"shard file {file} arrived damaged {self.retries[file]} times; "
                             "check the network or the worker's disk and ship again")
        b = self.blocks[file]
        self.bytes_total += b.bytes  # resent bytes count again, so progress stays monotonic
        self.jobs.append((b, 0))

    def _fail(self, rep: ShipError) -> NoReturn:
        # Collect the answers still due, so the socket is clean for the next ship.
        deadline = time.monotonic() + _DRAIN_S
        while self.pending and (left := deadline - time.monotonic()) > 0:
            msg = self.recv(left)
            if msg is None:
                break
            try:
                self.pending.pop(parse_reply(msg).seq, None)
            except ProtocolError:
                continue  # garbage while draining: the original error is what matters
        where = f" ({rep.file})" if rep.file else ""
        text = f"The worker refused shard {self.split_id}{where}: {rep.message}"
        if rep.code == "bad_request":
            raise ProtocolError(text)
        if rep.code == "internal":
            raise PeerError(text)
        raise ShardError(text)

    # ---- plumbing ----------------------------------------------------------------------

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _request(self, req: Any, tensors: Sequence[torch.Tensor] = (), nbytes: int = 0) -> int:
        if isinstance(req, ShipChunk | ShipEndFile):
            self.pending[req.seq] = _Pending(req, nbytes)
        self.send(req.op, req.to_meta(), tensors)
        return req.seq

    def _reply(self) -> tuple[_Pending, Any]:
        """The next reply to one of our pending requests (stale replies are skipped)."""
        while True:
            rep = self._recv_one()
            p = self.pending.pop(rep.seq, None)
            if p is not None:
                return p, rep
            if isinstance(rep, ShipError) and rep.seq == -1:
                self._fail(rep)

    def _reply_to(self, seq: int) -> Any:
        while True:
            rep = self._recv_one()
            if rep.seq == seq:
                if isinstance(rep, ShipError):
                    self._fail(rep)
                return rep
            if isinstance(rep, ShipError) and rep.seq == -1:
                self._fail(rep)

    def _recv_one(self) -> Any:
        msg = self.recv(self.timeout)
        if msg is None:
            raise PeerError(f"The worker did not answer within {self.timeout:g} s while "
                            f"receiving shard {self.split_id}.")
        return parse_reply(msg)

    def _emit(self, file: str) -> None:
        if self.progress is None:
            return
        e = self.meter.update(self.bytes_done, self.bytes_total)
        self.progress(ShipProgress(file, self.bytes_done, self.bytes_total, self.files_done,
                                   self.files_total, e.rate, e.eta_s))


def _have(entry: Any, b: BlockInfo) -> tuple[int, bool]:
    """Validate one ship_have entry (the worker is trusted less than our own disk)."""
    if not isinstance(entry, dict):
        raise ProtocolError(f"The worker's ship_have entry for {b.file} is not a map.")
    have, complete = entry.get("have_bytes"), entry.get("complete")
    if (not isinstance(have, int) or isinstance(have, bool) or not 0 <= have <= b.bytes
            or not isinstance(complete, bool)):
        raise ProtocolError(f"The worker's ship_have entry for {b.file} is invalid.")
    return have, complete
