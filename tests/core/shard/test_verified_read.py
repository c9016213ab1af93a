"""A block file changed on disk after the shard was checked (same size, times put back)
is refused before a rank computes with it; an unchanged block is hashed once only."""

from __future__ import annotations

import os

import pytest

from core.errors import ShardError
from core.model.config import load_config
from core.shard.manifest import load_manifest
from core.shard.plan import make_plan
from core.shard.verified_read import VerifiedReader
from tests.fixtures.thread_cluster import ThreadCluster
from tests.fixtures.tiny_models import make_tiny_model


def _tamper(path) -> None:
    """Flip the file's last byte (a weight), keep its size and put its times back."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x5A
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_streamed_block_changed_on_disk_is_refused_and_unchanged_ones_hashed_once(tmp_path):
    model = make_tiny_model(tmp_path / "m")
    tc = ThreadCluster(model, make_plan(load_config(model), world_size=1), tmp_path / "s",
                       window=1)  # every block streamed: read again at every step
    try:
        for pos in range(3):
            tc.step([1 + pos], pos)
        reader: VerifiedReader = tc.ranks[0].reader
        rank_dir = tc.ranks[0].rank_dir
        assert reader.hashed <= len(load_manifest(rank_dir).blocks)  # read 3 times each
        _tamper(rank_dir / load_manifest(rank_dir).block("L001.mlp").file)
        with pytest.raises(ShardError, match="sha256 does not match"):
            tc.step([4], 3)
    finally:
        tc.close()
