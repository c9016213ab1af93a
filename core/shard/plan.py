"""The tensor-parallel plan: which KV-head groups and MLP columns each rank holds.

Attention is split in whole KV-head groups (a KV head and the query heads that share it),
so no rank needs another's keys; a rank may hold zero groups. The MLP is split in blocks of
intermediate columns. Both follow the given shares (memory budgets, say 3:1), apportioned by
the largest-remainder method so the totals are exact.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from core.errors import TpiError
from core.model.config import ModelConfig


@dataclass(frozen=True)
class RankShare:
    """One rank's slice of every layer (the same slice in every layer)."""

    rank: int
    kv_start: int  # first KV head (inclusive)
    kv_end: int  # last KV head (exclusive)
    col_start: int  # first MLP intermediate column (inclusive)
    col_end: int  # last MLP intermediate column (exclusive)

    @property
    def num_kv_heads(self) -> int:
        return self.kv_end - self.kv_start

    @property
    def num_cols(self) -> int:
        return self.col_end - self.col_start


@dataclass(frozen=True)
class Plan:
    """A split of one model over `len(ranks)` ranks; rank 0 is the master."""

    ranks: tuple[RankShare, ...]
    shares: tuple[float, ...]

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    def to_dict(self) -> dict:
        return {"ranks": [asdict(r) for r in self.ranks], "shares": list(self.shares)}

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(
            ranks=tuple(RankShare(**r) for r in d["ranks"]),
            shares=tuple(float(s) for s in d["shares"]),
        )

    def key(self) -> str:
        """A short stable id of the split, for cache folder names."""
        blob = json.dumps([asdict(r) for r in self.ranks], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def apportion(total: int, shares: list[float]) -> list[int]:
    """Split `total` units in proportion to `shares`, summing exactly (largest remainder)."""
    s = sum(shares)
    exact = [total * x / s for x in shares]
    counts = [int(e) for e in exact]
    # Ties go to the lower rank so the plan is deterministic.
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _col_unit(intermediate: int) -> int:
    """Columns move in blocks that keep matmuls aligned, when the size allows."""
    for unit in (64, 32, 16, 8):
        if intermediate % unit == 0:
            return unit
    return 1


def make_plan(cfg: ModelConfig, shares: list[float] | None = None, world_size: int = 1) -> Plan:
    """Plan a split over `len(shares)` ranks (or `world_size` equal ranks)."""
    shares = list(shares) if shares else [1.0] * world_size
    if not shares or not all(math.isfinite(x) and x >= 0 for x in shares) or sum(shares) <= 0:
        raise TpiError(f"shares must be non-negative and not all zero, got {shares}")
    kv = apportion(cfg.num_kv_heads, shares)
    unit = _col_unit(cfg.intermediate_size)
    cols = [c * unit for c in apportion(cfg.intermediate_size // unit, shares)]
    ranks, k0, c0 = [], 0, 0
    for r, (k, c) in enumerate(zip(kv, cols, strict=True)):
        ranks.append(RankShare(rank=r, kv_start=k0, kv_end=k0 + k, col_start=c0, col_end=c0 + c))
        k0, c0 = k0 + k, c0 + c
    return Plan(ranks=tuple(ranks), shares=tuple(float(x) for x in shares))


def parse_shares(text: str) -> list[float]:
    """'3,1' -> [3.0, 1.0], with a clear error for anything else."""
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TpiError(
            f"--shares takes numbers separated by commas, like 3,1 (got {text!r})"
        ) from None
    if not vals or not all(math.isfinite(v) and v >= 0 for v in vals) or sum(vals) <= 0:
        raise TpiError(f"--shares needs non-negative numbers, not all zero (got {text!r})")
    return vals
