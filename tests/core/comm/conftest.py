"""Fixtures: spawn worker ranks as real processes, as the engine does."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator

import pytest

from core.comm.group import CommGroup
from tests.core.comm.ranks import run_worker


@pytest.fixture
def cluster() -> Iterator[Callable[..., tuple[CommGroup, object]]]:
    """cluster(world_size, **master_kwargs) -> (rank 0 group in this process, result queue)."""
    ctx = mp.get_context("spawn")
    procs: list = []
    groups: list[CommGroup] = []

    def make(world_size: int, **kw) -> tuple[CommGroup, object]:
        g = CommGroup.master(world_size, **kw)
        groups.append(g)
        out = ctx.Queue()
        for r in range(1, world_size):
            p = ctx.Process(target=run_worker, args=(r, world_size, g.endpoints, out),
                            daemon=True)
            p.start()
            procs.append(p)
        g.wait_ready(90)
        return g, out

    yield make
    for g in groups:
        g.close()
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
