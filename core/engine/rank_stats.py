"""A rank's live numbers: memory (RSS, window), what it streamed, and its share of the model."""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import asdict, dataclass

import psutil


@dataclass
class RankStats:
    """Sent by each rank to rank 0; what the Devices panel and --json report."""

    rank: int
    pid: int
    rss_mb: float
    peak_rss_mb: float
    resident_blocks: int
    resident_bytes: int
    budget_blocks: int  # the window (== total_blocks when keeping all)
    total_blocks: int
    total_bytes: int
    loads: int
    bytes_read: int
    stall_s: float
    kv_heads: int
    mlp_cols: int
    threads: int = 0  # torch threads of its layer compute (0: not reported)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RankStats:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def peak_rss_mb() -> float:
    """This process's peak resident set (high-water mark) in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def collect(runtime, rank: int) -> RankStats:
    """Stats of a RankRuntime in this process."""
    sched = runtime.scheduler
    blocks, nbytes = sched.resident()
    share = runtime.manifest.share
    layer_blocks = [b for b in runtime.manifest.blocks if b.name in set(sched.order)]
    return RankStats(
        rank=rank,
        pid=os.getpid(),
        rss_mb=psutil.Process().memory_info().rss / 2**20,
        peak_rss_mb=peak_rss_mb(),
        resident_blocks=blocks,
        resident_bytes=nbytes,
        budget_blocks=sched.window,
        total_blocks=len(sched.order),
        total_bytes=sum(b.bytes for b in layer_blocks),
        loads=sched.stats.loads,
        bytes_read=sched.stats.bytes_read,
        stall_s=round(sched.stats.stall_s, 4),
        kv_heads=share.num_kv_heads,
        mlp_cols=share.num_cols,
        threads=runtime.threads,
    )
