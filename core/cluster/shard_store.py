"""The worker's shards, one folder per paired master: `<root>/m-<key hash>/<split_id>/`.

A split id is the master's own name for a shard, so two masters could pick the same one;
keyed by the master's CURVE public key (as the control port authenticated it), one
master can neither replace nor read another's files. All masters share one DiskBudget
(free space and a per-master quota). At start, folders of the old flat layout
(`<root>/<split_id>/`, which no master can address any more) and unfinished ships
untouched for a day are removed.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from core.cluster.disk_budget import DiskBudget
from core.cluster.shard_cache import ShardCache, remove_stale

PREFIX = "m-"


def owner_folder(master_key: str) -> str:
    """A file name for a master's key (a Z85 key holds characters like / and .)."""
    return PREFIX + hashlib.sha256(master_key.encode()).hexdigest()[:24]


class ShardStore:
    """`for_master(key)` is that master's ShardCache (made on first use)."""

    def __init__(self, root: Path, quota_bytes: int | None = None,
                 keep_free: int | None = None,
                 busy: Callable[[Path], bool] = lambda d: False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.budget = DiskBudget(self.root, quota_bytes, keep_free)
        self.busy = busy
        self._caches: dict[str, ShardCache] = {}
        self._tidy()

    def for_master(self, master_key: str) -> ShardCache:
        name = owner_folder(master_key)
        cache = self._caches.get(name)
        if cache is None:
            cache = ShardCache(self.root / name, budget=self.budget, busy=self.busy)
            self._caches[name] = cache
        return cache

    def forget(self, master_key: str) -> None:
        """An unpaired master's shards go with it."""
        name = owner_folder(master_key)
        cache = self._caches.pop(name, None)
        if cache is not None:
            cache.close()
        shutil.rmtree(self.root / name, ignore_errors=True)

    def close(self) -> None:
        for c in self._caches.values():
            c.close()
        self._caches.clear()

    def _tidy(self) -> None:
        for d in self.root.iterdir():
            if d.is_dir() and not d.is_symlink() and not d.name.startswith(PREFIX):
                shutil.rmtree(d, ignore_errors=True)  # the old flat layout
            elif d.is_dir():
                remove_stale(d)
