"""Block reads that are checked against the manifest's sha256 without hashing every time.

A streamed block (window smaller than the model) is read from disk again at every token;
hashing it each time would cost ~1 s a GB. Instead a block's file is hashed the first
time it is read (streamed through the page cache, no copy kept), and remembered by
(device, inode, size, mtime, ctime): a later read of the same file skips the hash, and a
file that was replaced, rewritten or had its times reset (ctime changes on any of these
and cannot be set back) is hashed again before it is loaded. The tensors stay mapped
from the file (as read_block gives them, no copy), so a block that stays resident is
checked when it is loaded, not at every use; a change after that reaches it only through
the page cache, by someone who can write this user's files.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import torch

from core.errors import ShardError
from core.shard.manifest import Manifest, read_block

Stamp = tuple[int, int, int, int, int]


def _stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class VerifiedReader:
    """`read(name)`: block `name` of `rank_dir`, as its manifest's sha256 says it is."""

    def __init__(self, rank_dir: Path, manifest: Manifest):
        self.rank_dir = Path(rank_dir)
        self.manifest = manifest
        self._checked: dict[str, Stamp] = {}
        self._lock = threading.Lock()  # the scheduler's prefetch thread reads too
        self.hashed = 0  # reads that hashed their file (for tests and stats)

    def read(self, name: str) -> dict[str, torch.Tensor]:
        info = self.manifest.block(name)
        path = self.rank_dir / info.file
        with self._lock:
            known = self._checked.get(name)
        if known is None or _stamp(os.stat(path)) != known:
            known = self._hash(name, path, info.sha256)
        tensors = read_block(self.rank_dir, self.manifest, name)  # mapped, not copied
        if _stamp(os.stat(path)) != known:
            raise ShardError(f"shard file {self.rank_dir.name}/{info.file} changed while it "
                             f"was being loaded; delete {self.rank_dir} to re-split")
        return tensors

    def _hash(self, name: str, path: Path, sha256: str) -> Stamp:
        """Hash the file as it is now (streamed: no copy of it is kept); its stamp."""
        with open(path, "rb") as f:
            before = _stamp(os.fstat(f.fileno()))
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != sha256:
            raise ShardError(f"shard file {self.rank_dir.name}/{path.name} is corrupt (its "
                             f"sha256 does not match the manifest); delete {self.rank_dir} "
                             "to re-split")
        with self._lock:
            self._checked[name] = before
            self.hashed += 1
        return before
