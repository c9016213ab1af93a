"""The sliding-window memory scheduler (TPI-LLM section 3.3).

A rank visits its blocks in a fixed cyclic order (layer 0 attention, layer 0 MLP, layer 1
attention, ...; then the next token starts over). Only `window` blocks are resident: a
background thread loads the next blocks from disk while the current one computes, and a
block is freed as soon as it has been used. Peak memory then depends on the window, not on
the depth of the model. `window=None` ("all") loads everything once and never frees.

Instrumented: every change of the resident set is recorded, so the GUI can draw the window
and benchmarks can report load stalls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from core.progress import StageProgress

Block = dict[str, torch.Tensor]
Loader = Callable[[str], Block]


@dataclass(frozen=True)
class WindowSample:
    """The resident set at one moment."""

    t: float  # time.monotonic()
    blocks: int
    bytes: int


@dataclass
class SchedulerStats:
    """Totals since start: how much was read and how long compute waited for it."""

    loads: int = 0
    bytes_read: int = 0
    load_s: float = 0.0  # time spent inside the loader (background)
    stall_s: float = 0.0  # time compute waited in acquire()
    peak_blocks: int = 0
    peak_bytes: int = 0


def block_bytes(block: Block) -> int:
    return sum(t.nbytes for t in block.values())  # tensors and QWeights alike


class MemoryScheduler:
    """Keeps at most `window` blocks of `order` resident, prefetching in cyclic order."""

    def __init__(self, order: list[str], loader: Loader, window: int | None,
                 on_release: Callable[[str], None] | None = None, prefetch: int | None = None):
        if window is not None and window < 1:
            raise ValueError("window must be at least 1 block, or None for all")
        if prefetch is not None and prefetch < 1:
            raise ValueError("prefetch must be at least 1 block, or None for the window")
        self.order = list(order)
        self._index = {name: i for i, name in enumerate(self.order)}
        self._loader = loader
        self._on_release = on_release  # e.g. drop the block's file from the page cache
        # Blocks loaded (or loading) ahead of compute, at most; None = as the window allows.
        # Lower it to keep early loads from competing with compute for memory bandwidth.
        self.prefetch = prefetch
        self._ahead: set[str] = set()  # loaded, not yet acquired by compute
        n = len(self.order)
        self.keep_all = window is None or window >= n
        self.window = n if self.keep_all else window
        self.stats = SchedulerStats()
        self.timeline: deque[WindowSample] = deque(maxlen=8192)
        self._resident: dict[str, Block] = {}
        self._bytes = 0
        self._cursor = 0  # index in `order` of the next block to load
        self._loading: str | None = None
        self._gen = 0  # bumped when the cursor jumps, so a stale load is dropped
        self._error: BaseException | None = None
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="block-prefetch", daemon=True)
        self._record()
        self._thread.start()

    # --- compute side -------------------------------------------------------------------

    def acquire(self, name: str) -> Block:
        """Block `name`'s tensors, waiting for the prefetcher if it is not in yet."""
        t0 = time.perf_counter()
        with self._cond:
            if name not in self._resident and self._loading != name and not self._next_is(name):
                self._jump_to(name)
            while name not in self._resident:
                if self._error is not None:
                    raise self._error
                self._cond.wait()
            self.stats.stall_s += time.perf_counter() - t0
            if name in self._ahead:
                self._ahead.discard(name)
                if self.prefetch is not None:  # only then can this make room for a load
                    self._cond.notify_all()
            return self._resident[name]

    def release(self, name: str) -> None:
        """Done with `name` for this pass: free it so the next block can come in."""
        if self.keep_all:
            return
        with self._cond:
            block = self._resident.pop(name, None)
            if block is not None:
                self._bytes -= block_bytes(block)
                self._record()
                self._cond.notify_all()
        if block is not None and self._on_release is not None:
            del block  # its file mapping must be gone for the page cache to let go
            self._on_release(name)

    def wait_all_loaded(self, progress: StageProgress | None = None) -> None:
        """With keep_all, wait until every block is in (start-up), reporting progress."""
        with self._cond:
            while len(self._resident) < self.window:
                if self._error is not None:
                    raise self._error
                if progress:
                    progress(len(self._resident), self.window)
                self._cond.wait(0.2)
        if progress:
            progress(self.window, self.window)

    def resident(self) -> tuple[int, int]:
        """(blocks, bytes) resident right now."""
        with self._cond:
            return len(self._resident), self._bytes

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._resident.clear()
            self._bytes = 0
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # --- prefetch side ------------------------------------------------------------------

    def _next_is(self, name: str) -> bool:
        return self.order[self._cursor] == name

    def _jump_to(self, name: str) -> None:
        """An out-of-order request (after an aborted step): restart the cycle at `name`."""
        self._gen += 1
        self._ahead.clear()
        if not self.keep_all:
            self._resident.clear()
            self._bytes = 0
        self._cursor = self._index[name]
        self._record()
        self._cond.notify_all()

    def _has_room(self) -> bool:
        loading = 1 if self._loading else 0
        if len(self._resident) + loading >= self.window:
            return False
        if self.keep_all or self.prefetch is None:
            return True
        return len(self._ahead) + loading < self.prefetch

    def _run(self) -> None:
        # Loads run torch ops too. With the default thread count this thread would start an
        # OpenMP team of its own; libgomp then has more threads than cores and makes every
        # team sleep between parallel regions instead of spinning, which cost ~60 us per
        # parallel op on the compute thread (int8 decode 28 -> 16 ms/token when fixed).
        # torch.set_num_threads also sets the default for threads started later; the
        # compute side re-asserts its own count (RankRuntime.forward).
        torch.set_num_threads(1)
        while True:
            with self._cond:
                while not self._stop and (not self._has_room() or self._error is not None):
                    self._cond.wait()
                if self._stop:
                    return
                name, gen = self.order[self._cursor], self._gen
                if name in self._resident:  # only when every block fits
                    self._cursor = (self._cursor + 1) % len(self.order)
                    continue
                self._loading = name
            self._load(name, gen)

    def _load(self, name: str, gen: int) -> None:
        t0 = time.perf_counter()
        try:
            block = self._loader(name)
        except BaseException as e:  # handed to compute, which raises it for the user
            with self._cond:
                self._loading = None
                self._error = e
                self._cond.notify_all()
            return
        size = block_bytes(block)
        with self._cond:
            self._loading = None
            self.stats.loads += 1
            self.stats.bytes_read += size
            self.stats.load_s += time.perf_counter() - t0
            if gen == self._gen and not self._stop:
                self._resident[name] = block
                self._ahead.add(name)
                self._bytes += size
                self._cursor = (self._cursor + 1) % len(self.order)
                self._record()
            self._cond.notify_all()

    def _record(self) -> None:
        n = len(self._resident)
        self.stats.peak_blocks = max(self.stats.peak_blocks, n)
        self.stats.peak_bytes = max(self.stats.peak_bytes, self._bytes)
        self.timeline.append(WindowSample(time.monotonic(), n, self._bytes))
