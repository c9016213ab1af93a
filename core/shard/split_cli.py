"""The `tpi-chat split` work: plan a model over the given shares, split it, show progress.

Progress is one line on stderr redrawn with carriage returns (percent, MB written, blocks),
then a one-line summary naming where the shards are.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

import torch

from core.model.config import load_config
from core.shard.plan import make_plan
from core.shard.splitter import SplitResult, split_model

_BAR = 30
_MB = 1 << 20


class _ProgressLine:
    """Draws `[#####.....]  42%  12.3 MB  17/40 blocks` on one line."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.bytes = 0
        self.drawn = False

    def add_bytes(self, n: int) -> None:
        self.bytes += n

    def __call__(self, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        fill = int(frac * _BAR)
        self.stream.write(
            f"\r[{'#' * fill}{'.' * (_BAR - fill)}] {frac * 100:3.0f}%  "
            f"{self.bytes / _MB:8.1f} MB  {done}/{total} blocks"
        )
        self.stream.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")


def run_split(
    model_dir: Path,
    shares: list[float],
    out_root: Path | None = None,
    dtype: torch.dtype | str = "auto",
    *,
    model_hash: str | None = None,
    stream: TextIO | None = None,
) -> SplitResult:
    """Split `model_dir` over `len(shares)` ranks into `out_root`, reporting on `stream`.

    `out_root` defaults to `<cache dir>/shards`; `model_hash` to core.model.model_dir's hash,
    the one the rest of the app keys its caches by.
    """
    from core.model.cache import cache_dir
    from core.model.model_dir import model_hash as hash_model_dir

    stream = stream or sys.stderr
    cfg = load_config(Path(model_dir))
    out_root = Path(out_root) if out_root is not None else cache_dir() / "shards"
    model_hash = model_hash or hash_model_dir(model_dir)
    plan = make_plan(cfg, shares)
    line = _ProgressLine(stream)
    t0 = time.monotonic()
    try:
        result = split_model(
            Path(model_dir),
            plan,
            out_root,
            dtype,
            progress=line,
            model_hash=model_hash,
            on_written=line.add_bytes,
        )
    finally:
        line.end()
    sizes = ", ".join(
        f"rank{r} {n / _MB:.1f} MB ({s.num_kv_heads} KV heads, {s.num_cols} cols)"
        for r, (n, s) in enumerate(zip(result.bytes_per_rank, plan.ranks, strict=True))
    )
    what = (
        "already split (cached)" if result.cached else (f"split in {time.monotonic() - t0:.1f} s")
    )
    stream.write(
        f"{what} into {plan.world_size} ranks, {result.dtype}: {sizes}; at {result.root}\n"
    )
    for note in result.conversions:
        stream.write(f"  converted {note}\n")
    stream.flush()
    return result
