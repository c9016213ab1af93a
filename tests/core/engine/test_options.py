"""Thread counts: per rank, from the cores of the machine the rank runs on."""

from __future__ import annotations

from core.engine.options import RunOptions


def test_ranks_share_only_the_cores_of_the_machine_they_run_on(monkeypatch):
    monkeypatch.setattr("core.engine.options.usable_cores", lambda: 8)
    assert RunOptions(ranks=4).threads_per_rank() == 2  # all four here
    assert RunOptions(ranks=4).threads_per_rank(local_ranks=1) == 8  # three on peers
    assert RunOptions(ranks=4).threads_per_rank(local_ranks=16) == 1
    assert RunOptions(ranks=4, threads=3).threads_per_rank(local_ranks=1) == 3  # as asked


def test_a_process_pinned_to_some_cores_counts_only_those():
    import os

    from core.cpu import usable_cores

    mine = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(mine)})
        assert usable_cores() == 1
        assert RunOptions(ranks=1).threads_per_rank() == 1
    finally:
        os.sched_setaffinity(0, mine)
    assert usable_cores() == len(mine)
