"""The worker's shard cache: receives one rank's block files safely, atomically, resumably.

Layout under the cache root, one folder per shipped rank:

    <root>/<split_id>/<block file>          complete, sha256-verified files
    <root>/<split_id>/<block file>.part     a file being received (resumable from its size)
    <root>/<split_id>/.verified.json        (size, mtime_ns, sha256) per verified file
    <root>/<split_id>/manifest.json         written last: its presence marks the dir usable

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.cluster.ship_messages import MAX_CHUNK, check_name, check_sha256
from core.errors import ProtocolError, ShardError
from core.shard.blocks import MANIFEST
from core.shard.manifest import BlockInfo, Manifest, sha256_file, write_manifest

SIDECAR = ".verified.json"
PART = ".part"
DEFAULT_RESERVE = 64 << 20  # keep this much disk free after a ship, for everything else
_MAX_SESSIONS = 8  # concurrent ships in progress (one per split id); oldest is dropped
_MAX_FILES = 4096
_READ = 1 << 20


class HashMismatch(ShardError):
    """A received file's sha256 differs from its manifest; its temp file was deleted."""

    def __init__(self, message: str, file: str):
        super().__init__(message)
        self.file = file


class NoSpace(ShardError):
    """The worker's disk cannot hold the shard."""


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
                 reserve_bytes: int = DEFAULT_RESERVE):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._real_root = self.root.resolve()
        self.max_chunk = min(int(max_chunk), MAX_CHUNK)
        self.reserve_bytes = int(reserve_bytes)
        self._sessions: dict[str, _Session] = {}

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
            old.close()
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
        free = shutil.disk_usage(self.root).free
        if need + self.reserve_bytes > free:
            raise NoSpace(
                f"Not enough disk space for shard {split_id}: it needs {need / 1e6:.1f} MB "
                f"more (keeping {self.reserve_bytes / 1e6:.0f} MB spare) but only "
                f"{free / 1e6:.1f} MB are free in {self.root}. Free some space or choose "
                "another cache folder."
            )
        s = _Session(d, m, blocks, {f for f, h in have.items() if h.complete})
        self._sessions[split_id] = s
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions))).close()
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
        self._sessions.pop(split_id).close()
        return s.dir

    def close(self) -> None:
        """Close every temp file (they stay on disk, ready to resume)."""
        for s in self._sessions.values():
            s.close()
        self._sessions.clear()

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
        fh = open(s.dir / (file + PART), "ab", buffering=0)
        size = fh.seek(0, os.SEEK_END)
        p = _Part(fh, size, hashlib.sha256() if size == 0 else None)
        s.parts[file] = p
        return p


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
