"""Thread counts: per rank, from the cores of the machine the rank runs on."""

from __future__ import annotations

from core.engine.options import RunOptions


def test_ranks_share_only_the_cores_of_the_machine_they_run_on(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert RunOptions(ranks=4).threads_per_rank() == 2  # all four here
    assert RunOptions(ranks=4).threads_per_rank(local_ranks=1) == 8  # three on peers
    assert RunOptions(ranks=4).threads_per_rank(local_ranks=16) == 1
    assert RunOptions(ranks=4, threads=3).threads_per_rank(local_ranks=1) == 3  # as asked
