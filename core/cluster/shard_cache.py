"""The worker's shard cache: receives one rank's block files safely, atomically, resumably.

Layout under the cache root, one folder per shipped rank:

    <root>/<split_id>/<block file>          complete, sha256-verified files
    <root>/<split_id>/<block file>.part     a file being received (resumable from its size)
    <root>/<split_id>/.verified.json        (size, mtime_ns, sha256) per verified file
    <root>/<split_id>/manifest.json         written last: its presence marks the dir usable

The worker gives each paired master a cache of its own (core/cluster/shard_store.py), so
one master's split ids never name another's files. Disk use is bounded by a DiskBudget
shared by all of them (disk_budget.py): a `begin` claims what the ship still needs, and
a master whose quota is full has its least recently used committed shards removed first
(never one a running rank reads, `busy`). At most 8 temp files are open at a time.

Every name from the wire is one plain path component (`check_name`) and its resolved path
must stay inside the root, so a hostile name is refused before anything touches the disk.
The sidecar lets a restarted worker skip re-hashing gigabytes: a file whose size and
mtime_ns still match the sidecar is trusted; anything else is hashed again, so a file
edited in place (new mtime) is caught and re-sent.

Not thread-safe: one owner thread (the worker's control loop) drives it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.cluster.disk_budget import Claim, DiskBudget, NoSpace, folder_bytes
from core.cluster.ship_messages import MAX_CHUNK, check_name, check_sha256
from core.errors import ProtocolError, ShardError
from core.shard.blocks import MANIFEST
from core.shard.manifest import BlockInfo, Manifest, sha256_file, write_manifest

SIDECAR = ".verified.json"
PART = ".part"
_MAX_SESSIONS = 8  # concurrent ships in progress (one per split id); oldest is dropped
_MAX_SHARDS = 64  # shard folders one master may keep (the least recently used go first)
_MAX_OPEN = 8  # temp files held open (a master may write to 4096 files of 8 ships)
STALE_S = 24 * 3600  # an unfinished ship untouched this long is deleted
_MAX_FILES = 4096
_READ = 1 << 20


class HashMismatch(ShardError):
    """A received file's sha256 differs from its manifest; its temp file was deleted."""

    def __init__(self, message: str, file: str):
        super().__init__(message)
        self.file = file


__all__ = ["NoSpace", "HashMismatch", "ShardCache", "FileHave"]


@dataclass(frozen=True)
class FileHave:
    """What the worker already holds of one file."""

    have_bytes: int
    complete: bool


@dataclass
class _Part:
    fh: Any  # a raw (unbuffered) binary file opened for append
    size: int
    hasher: Any  # sha256 of bytes [0, size), or None until first needed


@dataclass
class _Session:
    dir: Path
    manifest: Manifest
    blocks: dict[str, BlockInfo]  # by file name
    claim: Claim
    complete: set[str] = field(default_factory=set)
    parts: dict[str, _Part] = field(default_factory=dict)

    def block(self, file: str) -> BlockInfo:
        check_name(file, "shard file name")
        b = self.blocks.get(file)
        if b is None:
            raise ProtocolError(f"{file!r} is not a file of shard {self.dir.name}.")
        return b

    def close(self) -> None:
        for p in self.parts.values():
            p.fh.close()
        self.parts.clear()


class ShardCache:
    """Receives rank dirs into `root`; see the module docstring for the layout."""

    def __init__(self, root: Path, *, max_chunk: int = MAX_CHUNK,
                 budget: DiskBudget | None = None,
                 busy: Callable[[Path], bool] = lambda d: False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._real_root = self.root.resolve()
        self.max_chunk = min(int(max_chunk), MAX_CHUNK)
        self.budget = budget or DiskBudget(self.root)
        self.busy = busy
        self._sessions: dict[str, _Session] = {}
        remove_stale(self.root)

    # ---- paths -------------------------------------------------------------------------

    def _inside(self, path: Path, what: str) -> Path:
        # Belt and braces after check_name: also refuses a symlink pointing out of the root.
        if not path.resolve().is_relative_to(self._real_root):
            raise ProtocolError(f"{what} {path.name!r} would land outside the shard cache.")
        return path

    def rank_dir(self, split_id: str) -> Path:
        """Where shard `split_id` lives (validated name; the dir may not exist yet)."""
        return self._inside(self.root / check_name(split_id, "split id"), "split id")

    def is_complete(self, split_id: str) -> bool:
        """True once the shard was committed (its manifest.json exists)."""
        return (self.rank_dir(split_id) / MANIFEST).is_file()

    # ---- protocol steps ----------------------------------------------------------------

    def begin(self, split_id: str, manifest: dict[str, Any]) -> dict[str, FileHave]:
        """Start (or restart) receiving `split_id`; what the worker already has, per file."""
        d = self.rank_dir(split_id)
        m, blocks = self._check_manifest(d, split_id, manifest)
        old = self._sessions.pop(split_id, None)
        if old is not None:  # the master restarted its ship: forget the stale writers
            self._drop(old)
        d.mkdir(exist_ok=True)
        side = _load_sidecar(d)
        have: dict[str, FileHave] = {}
        need = 0
        for f, b in blocks.items():
            part = d / (f + PART)
            if _verified(d / f, b, side):
                part.unlink(missing_ok=True)
                have[f] = FileHave(b.bytes, True)
                continue
            (d / f).unlink(missing_ok=True)  # wrong size or hash: it will be re-sent
            size = part.stat().st_size if part.is_file() else 0
            if size > b.bytes:
                part.unlink()
                size = 0
            have[f] = FileHave(size, False)
            need += b.bytes - size
        if need or not all(h.complete for h in have.values()):
            # Files are about to change: the dir must not look complete meanwhile.
            (d / MANIFEST).unlink(missing_ok=True)
        _save_sidecar(d, {f: e for f, e in side.items() if f in blocks})
        self._make_room(need, keep=d)
        claim = self.budget.claim(self.root, split_id, need)
        s = _Session(d, m, blocks, claim, {f for f, h in have.items() if h.complete})
        self._sessions[split_id] = s
        while len(self._sessions) > _MAX_SESSIONS:
            self._drop(self._sessions.pop(next(iter(self._sessions))))
        return have

    def chunk(self, split_id: str, file: str, offset: int, data: memoryview | bytes) -> int:
        """Append `data` at exactly `offset` of `file`'s temp file; returns its new size."""
        s = self._session(split_id)
        b = s.block(file)
        n = len(data)
        if file in s.complete:
            raise ProtocolError(f"{file} of shard {split_id} is already complete.")
        if not 0 < n <= self.max_chunk:
            raise ProtocolError(f"A chunk of {n} bytes is refused (1 to {self.max_chunk}).")
        if offset + n > b.bytes:
            raise ProtocolError(f"A chunk at {offset} of {n} bytes would make {file} larger "
                                f"than the {b.bytes} bytes its manifest declares.")
        p = s.parts.get(file) or self._open_part(s, file)
        s.parts[file] = s.parts.pop(file)  # most recently used last
        if offset != p.size:
            raise ProtocolError(
                f"Chunk of {file} at offset {offset} but the worker holds {p.size} bytes: "
                "chunks must follow each other with no gap or overlap.")
        if p.hasher is None:  # resumed file: hash the bytes already there, once
            p.hasher = _hash_prefix(s.dir / (file + PART), p.size)
        view = memoryview(data).cast("B")
        try:
            while view:  # a raw write may be partial
                view = view[p.fh.write(view):]
        except OSError:
            # Disk full or gone: drop the writer so its real size is re-read next time.
            s.parts.pop(file).fh.close()
            raise
        p.hasher.update(data)
        p.size += n
        s.claim.written += n
        return p.size

    def end_file(self, split_id: str, file: str, sha256: str) -> None:
        """Verify the temp file, fsync it and rename it into place (atomic)."""
        s = self._session(split_id)
        b = s.block(file)
        if check_sha256(sha256) != b.sha256:
            raise ProtocolError(f"The sha256 sent for {file} differs from its manifest.")
        if file in s.complete:
            return
        part = s.dir / (file + PART)
        p = s.parts.pop(file, None)
        if p is None:
            if not part.exists() and b.bytes == 0:
                part.touch()
            if not part.exists():
                raise ProtocolError(f"No data was received for {file}.")
            p = _Part(open(part, "ab", buffering=0), part.stat().st_size, None)
        try:
            os.fsync(p.fh.fileno())
        finally:
            p.fh.close()
        if p.size != b.bytes:
            raise ProtocolError(f"{file} holds {p.size} of its {b.bytes} bytes; send the rest "
                                "before ship_end_file.")
        digest = p.hasher.hexdigest() if p.hasher is not None else sha256_file(part)
        if digest != b.sha256:
            part.unlink(missing_ok=True)
            raise HashMismatch(f"{file} of shard {split_id} arrived damaged (sha256 mismatch); "
                               "it must be sent again.", file)
        final = s.dir / file
        os.replace(part, final)
        _fsync_dir(s.dir)
        side = _load_sidecar(s.dir)
        side[file] = _entry(final, b.sha256)
        _save_sidecar(s.dir, side)
        s.complete.add(file)

    def commit(self, split_id: str) -> Path:
        """Write manifest.json (last, atomically) once every file is verified."""
        s = self._session(split_id)
        missing = sorted(set(s.blocks) - s.complete)
        if missing:
            raise ProtocolError(f"Cannot commit shard {split_id}: {len(missing)} files are not "
                                f"complete yet (first: {missing[0]}).")
        write_manifest(s.dir, s.manifest)
        _fsync_dir(s.dir)
        for stray in s.dir.glob("*" + PART):  # leftovers of files no longer in the manifest
            stray.unlink(missing_ok=True)
        self._drop(self._sessions.pop(split_id))
        return s.dir

    def close(self) -> None:
        """Close every temp file (they stay on disk, ready to resume)."""
        for s in self._sessions.values():
            self._drop(s)
        self._sessions.clear()

    def _drop(self, s: _Session) -> None:
        s.close()
        self.budget.release(s.claim)

    def _make_room(self, need: int, keep: Path) -> None:
        """Over quota or over _MAX_SHARDS folders: delete this master's least recently
        used shards (not `keep`, not one in a ship, not one a rank runs from) until
        `need` more bytes fit."""
        excess = self.budget.over_quota(self.root, need)
        dirs = [d for d in self.root.iterdir() if d.is_dir()]
        extra = len(dirs) - _MAX_SHARDS
        if excess <= 0 and extra <= 0:
            return
        open_dirs = {s.dir for s in self._sessions.values()}
        for d in sorted((d for d in dirs if d != keep and d not in open_dirs
                         and not self.busy(d)), key=_last_used):
            if excess <= 0 and extra <= 0:
                break
            excess -= folder_bytes(d)
            extra -= 1
            shutil.rmtree(d, ignore_errors=True)

    def touch(self, split_id: str) -> None:
        """Mark a committed shard as used now (least recently used ones go first)."""
        with contextlib.suppress(OSError):
            os.utime(self.rank_dir(split_id) / MANIFEST)

    # ---- helpers -----------------------------------------------------------------------

    def _session(self, split_id: str) -> _Session:
        check_name(split_id, "split id")
        s = self._sessions.get(split_id)
        if s is None:
            raise ProtocolError(f"No ship of shard {split_id} is in progress (send ship_begin "
                                "first).")
        return s

    def _check_manifest(self, d: Path, split_id: str,
                        manifest: dict[str, Any]) -> tuple[Manifest, dict[str, BlockInfo]]:
        try:
            m = Manifest.from_dict(manifest)
        except (ShardError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ProtocolError(f"The manifest for shard {split_id} is invalid ({e}).") from None
        if len(m.blocks) > _MAX_FILES:
            raise ProtocolError(f"The manifest for shard {split_id} lists too many files.")
        blocks: dict[str, BlockInfo] = {}
        for b in m.blocks:
            self._inside(d / check_name(b.file, "shard file name"), "shard file name")
            if b.file in blocks:
                raise ProtocolError(f"The manifest for shard {split_id} lists {b.file} twice.")
            blocks[b.file] = b
        return m, blocks

    def _open_part(self, s: _Session, file: str) -> _Part:
        open_parts = [(x, f) for x in self._sessions.values() for f in x.parts]
        for x, f in open_parts[:max(0, len(open_parts) - _MAX_OPEN + 1)]:
            x.parts.pop(f).fh.close()  # reopened (and its prefix re-hashed) if needed
        fh = open(s.dir / (file + PART), "ab", buffering=0)
        size = fh.seek(0, os.SEEK_END)
        p = _Part(fh, size, hashlib.sha256() if size == 0 else None)
        s.parts[file] = p
        return p


def _last_used(d: Path) -> float:
    with contextlib.suppress(OSError):
        return (d / MANIFEST).stat().st_mtime
    return d.stat().st_mtime


def remove_stale(root: Path, now: float | None = None) -> list[Path]:
    """Delete unfinished ships (no manifest.json) untouched for STALE_S, and temp files
    left in finished ones (a crash between rename and cleanup); returns what went."""
    now = time.time() if now is None else now
    gone: list[Path] = []
    for d in root.iterdir() if root.is_dir() else ():
        if not d.is_dir() or d.is_symlink():
            continue
        if (d / MANIFEST).is_file():
            for p in d.glob("*" + PART):
                p.unlink(missing_ok=True)
                gone.append(p)
            continue
        newest = max((p.stat().st_mtime for p in d.iterdir()), default=d.stat().st_mtime)
        if now - newest > STALE_S:
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


def _entry(path: Path, sha256: str) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def _verified(path: Path, b: BlockInfo, side: dict[str, Any]) -> bool:
    """Is `path` the block `b`? Trusts the sidecar only while size and mtime_ns match."""
    try:
        st = path.stat()
    except OSError:
        side.pop(b.file, None)
        return False
    if st.st_size != b.bytes:
        side.pop(b.file, None)
        return False
    if side.get(b.file) == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": b.sha256}:
        return True
    ok = sha256_file(path) == b.sha256
    if ok:
        side[b.file] = _entry(path, b.sha256)
    else:
        side.pop(b.file, None)
    return ok


def _hash_prefix(path: Path, size: int) -> Any:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left and (buf := f.read(min(_READ, left))):
            h.update(buf)
            left -= len(buf)
    return h


def _load_sidecar(d: Path) -> dict[str, Any]:
    try:
        data = json.loads((d / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: it is only a cache, files get re-hashed
    return data if isinstance(data, dict) else {}


def _save_sidecar(d: Path, side: dict[str, Any]) -> None:
    tmp = d / (SIDECAR + ".tmp")
    tmp.write_text(json.dumps(side, sort_keys=True), encoding="utf-8")
    os.replace(tmp, d / SIDECAR)


def _fsync_dir(d: Path) -> None:
    """Make a rename durable (POSIX); Windows cannot open a directory, and needs not."""
    if os.name == "nt":
        return
    fd = os.open(d, os.O_RDONLY)
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)
