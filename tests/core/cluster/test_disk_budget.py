"""DiskBudget: concurrent ships share the free space instead of each counting all of it."""

from __future__ import annotations

import pytest

from core.cluster.disk_budget import DiskBudget, NoSpace, default_keep_free

KB = 1024


def test_eight_ships_cannot_each_claim_the_same_free_space(tmp_path):
    free = [100 * KB]
    budget = DiskBudget(tmp_path, quota_bytes=10**12, keep_free=0, free_bytes=lambda: free[0])
    claims = []
    for i in range(8):
        try:
            claims.append(budget.claim(tmp_path / "m", f"s{i}", 30 * KB))
        except NoSpace as e:
            assert "promised to other transfers" in str(e)
    assert len(claims) == 3
    claims[0].written = 30 * KB  # landed on disk: free space shrinks, the claim is spent
    free[0] -= 30 * KB
    with pytest.raises(NoSpace):
        budget.claim(tmp_path / "m", "s9", 30 * KB)
    budget.release(claims[1])  # a ship dropped or committed gives its claim back
    budget.claim(tmp_path / "m", "s9", 30 * KB)


def test_the_default_leaves_room_for_the_device():
    assert default_keep_free(10 * 2**30) == 512 * 2**20
    assert default_keep_free(2**40) == 2 * 2**30
    assert default_keep_free(2**20) == 64 * 2**20
