"""How much disk the worker's shard ships may take: shared by every ship of every master.

A ship's `begin` claims the bytes it still needs; the claim shrinks as chunks land and
ends at commit (or when the ship is dropped). A new claim must fit beside every other
open claim in the free space minus `keep_free`, and the master's own shard folder plus
its open claims must stay within its quota. So eight concurrent ships cannot each
count the same free gigabytes, and one paired master cannot fill the disk.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import ShardError

GB = 1 << 30


class NoSpace(ShardError):
    """The worker's disk (or this master's quota) cannot hold the shard."""


def default_quota(total: int) -> int:
    """Half of the disk holding the cache, per master."""
    return total // 2


def default_keep_free(total: int) -> int:
    """Left free for everything else on the device: 5% of the disk, 64 MB to 2 GB."""
    return max(64 << 20, min(2 * GB, total // 20))


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (symlinks not followed)."""
    n = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            n += st.st_size
    return n


@dataclass
class Claim:
    """Bytes one ship still may write: `need` at begin, less what it has written."""

    owner: Path  # the master's shard folder
    split_id: str
    need: int
    written: int = 0

    @property
    def outstanding(self) -> int:
        return max(0, self.need - self.written)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


class DiskBudget:
    """Claims of every open ship; `claim()` refuses what does not fit (NoSpace)."""

    def __init__(self, root: Path, quota_bytes: int | None = None,
                 keep_free: int | None = None, free_bytes: Callable[[], int] | None = None):
        self.root = Path(root)
        total = shutil.disk_usage(self.root).total
        self.quota = default_quota(total) if quota_bytes is None else int(quota_bytes)
        self.keep_free = default_keep_free(total) if keep_free is None else int(keep_free)
        self._free = free_bytes or (lambda: shutil.disk_usage(self.root).free)
        self._claims: dict[tuple[Path, str], Claim] = {}

    def claim(self, owner: Path, split_id: str, need: int) -> Claim:
        """Reserve `need` more bytes for ship `split_id` of the master at `owner` (any
        earlier claim of that ship is replaced)."""
        self._claims.pop((owner, split_id), None)
        others = sum(c.outstanding for c in self._claims.values())
        free = self._free()
        if need + others + self.keep_free > free:
            raise NoSpace(
                f"Not enough disk space for shard {split_id}: it needs {_mb(need)} more, "
                f"{_mb(others)} are promised to other transfers in progress and "
                f"{_mb(self.keep_free)} stay free for the device, but only {_mb(free)} are "
                f"free in {self.root}. Free some space or choose another cache folder.")
        mine = folder_bytes(owner) + sum(
            c.outstanding for c in self._claims.values() if c.owner == owner)
        if mine + need > self.quota:
            raise NoSpace(
                f"Shard {split_id} does not fit in this master's share of the worker's disk: "
                f"its shards take {_mb(mine)}, this one needs {_mb(need)} more, and each "
                f"master may use {_mb(self.quota)} (start the worker with a larger "
                "--shard-quota to allow more).")
        c = Claim(owner, split_id, need)
        self._claims[(owner, split_id)] = c
        return c

    def release(self, claim: Claim) -> None:
        if self._claims.get((claim.owner, claim.split_id)) is claim:
            del self._claims[(claim.owner, claim.split_id)]

    def over_quota(self, owner: Path, need: int) -> int:
        """How many bytes `owner` must free for `need` more to fit its quota (0: fits)."""
        mine = folder_bytes(owner) + sum(
            c.outstanding for c in self._claims.values() if c.owner == owner)
        return max(0, mine + need - self.quota)
