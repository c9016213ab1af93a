"""The sliding-window scheduler: bounded residency, prefetch overlap, errors, jumps."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from core.engine.scheduler import MemoryScheduler
from core.errors import ShardError

ORDER = [f"b{i}" for i in range(8)]


class CountingLoader:
    """Loads 1 KiB blocks and records the most blocks ever alive at once."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None):
        self.delay, self.fail_on = delay, fail_on
        self.loaded: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, name: str):
        if name == self.fail_on:
            raise ShardError(f"shard file {name} is truncated")
        time.sleep(self.delay)
        with self.lock:
            self.loaded.append(name)
        return {"w": torch.full((256,), float(ORDER.index(name)))}


def _one_pass(s: MemoryScheduler) -> list[float]:
    seen = []
    for name in ORDER:
        block = s.acquire(name)
        seen.append(float(block["w"][0]))
        s.release(name)
    return seen


@pytest.mark.parametrize("window", [1, 2, 3])
def test_window_bounds_residency_and_cycles(window):
    loader = CountingLoader()
    s = MemoryScheduler(ORDER, loader, window)
    try:
        for _ in range(3):
            assert _one_pass(s) == [float(i) for i in range(8)]
            assert s.stats.peak_blocks <= window
        assert s.stats.peak_bytes <= window * 1024
        assert len(loader.loaded) >= 3 * len(ORDER)  # streamed every pass
    finally:
        s.close()


def test_all_keeps_every_block_and_loads_once():
    loader = CountingLoader()
    s = MemoryScheduler(ORDER, loader, None)
    try:
        s.wait_all_loaded()
        for _ in range(3):
            _one_pass(s)
        assert sorted(loader.loaded) == sorted(ORDER)
        assert s.resident() == (8, 8 * 1024)
    finally:
        s.close()


def test_prefetch_overlaps_compute():
    """With window 2, the next block loads while the current one is 'computing'."""
    loader = CountingLoader(delay=0.05)
    s = MemoryScheduler(ORDER, loader, 2)
    try:
        s.acquire(ORDER[0])
        # 'computing' b0 (it is never released here): the prefetcher brings b1 in meanwhile
        deadline = time.monotonic() + 5
        while s.resident()[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.resident()[0] == 2
        s.release(ORDER[0])
    finally:
        s.close()


def test_loader_error_reaches_compute():
    s = MemoryScheduler(ORDER, CountingLoader(fail_on="b3"), 2)
    try:
        with pytest.raises(ShardError, match="truncated"):
            _one_pass(s)
    finally:
        s.close()


def test_out_of_order_request_restarts_the_cycle():
    """After an aborted step the next one starts at block 0 again: no deadlock."""
    s = MemoryScheduler(ORDER, CountingLoader(), 2)
    try:
        for name in ORDER[:3]:
            s.acquire(name)
            s.release(name)
        s.acquire(ORDER[4])  # aborted mid-way, never released
        assert _one_pass(s) == [float(i) for i in range(8)]
        assert s.stats.peak_blocks <= 2
    finally:
        s.close()


def test_release_hook_runs_once_per_streamed_block_in_order():
    released: list[str] = []
    s = MemoryScheduler(ORDER, CountingLoader(), 2, on_release=released.append)
    try:
        _one_pass(s)
        _one_pass(s)
        assert released == ORDER + ORDER
    finally:
        s.close()
    kept: list[str] = []
    s = MemoryScheduler(ORDER, CountingLoader(), None, on_release=kept.append)
    try:
        s.wait_all_loaded()
        _one_pass(s)
        assert kept == []  # resident blocks are never released
    finally:
        s.close()


def test_loads_run_single_threaded_in_torch():
    """A second OpenMP team (the prefetch thread's) made libgomp put every team to sleep
    between parallel ops, ~60 us each on the compute thread; loads must stay at 1 thread."""
    seen: list[int] = []

    def loader(name: str):
        seen.append(torch.get_num_threads())
        return {"w": torch.zeros(4)}

    s = MemoryScheduler(ORDER, loader, None)
    try:
        s.wait_all_loaded()
        assert seen and set(seen) == {1}
    finally:
        s.close()


def test_prefetch_depth_limits_loads_ahead_of_compute():
    """Window 4 would let 3 blocks come in ahead of the one in use; prefetch 1 allows one."""
    for prefetch, want in ((1, 2), (None, 4)):
        s = MemoryScheduler(ORDER, CountingLoader(), 4, prefetch=prefetch)
        try:
            s.acquire("b0")
            deadline = time.monotonic() + 5
            while s.resident()[0] < want and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # time for any extra (wrong) load to land
            assert s.resident()[0] == want
            s.release("b0")
            assert _one_pass_from(s, 1) == [float(i) for i in range(1, 8)]
        finally:
            s.close()


def _one_pass_from(s: MemoryScheduler, start: int) -> list[float]:
    seen = []
    for name in ORDER[start:]:
        seen.append(float(s.acquire(name)["w"][0]))
        s.release(name)
    return seen


def test_prefetch_depth_must_be_positive():
    with pytest.raises(ValueError, match="prefetch"):
        MemoryScheduler(ORDER, CountingLoader(), 4, prefetch=0)
