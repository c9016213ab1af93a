"""How to run a model: ranks, shares, window, context, link emulation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.cpu import usable_cores
from core.engine.spec_control import parse_speculate
from core.errors import TpiError
from core.shard.layout import AUTO, SHARD_DTYPES, SHORT_NAMES

Window = int | None | Literal["auto"]  # blocks, None = all, "auto" = per rank from budgets


@dataclass
class RunOptions:
    """Options of one local cluster (rank 0 here plus ranks-1 local worker processes)."""

    ranks: int = 1
    shares: list[float] | None = None  # relative memory budgets; None = equal
    window: Window = None  # resident blocks per rank; None = all; "auto" = from budgets
    prefetch: int | None = None  # streamed blocks loaded ahead of compute; None = window's room
    budgets: list[int] | None = None  # memory budget per rank in bytes (window "auto")
    context: int = 4096
    threads: int | None = None  # torch threads per rank; None = cores / ranks on that machine
    link_delay_ms: float = 0.0  # emulated per-link latency (benchmarks)
    link_mbps: float | None = None
    dtype: str = AUTO  # shard weight dtype (core.shard.layout): auto keeps a GGUF's own
    env: dict[str, str] = field(default_factory=dict)
    # speculative decoding (core/engine/spec_control.py): "auto", "off" or a number of
    # draft tokens, with the draft "self" or a model; off unless the CLI or app ask
    speculate: str = "off"
    draft: str = "self"

    def __post_init__(self) -> None:
        if SHORT_NAMES.get(self.dtype, self.dtype) not in (AUTO, *SHARD_DTYPES):
            raise ValueError(
                f"--dtype takes auto, fp32, bf16, fp16, int8, q8 or q4 (got {self.dtype!r})")
        self.dtype = SHORT_NAMES.get(self.dtype, self.dtype)
        if self.ranks < 1:
            raise ValueError("--ranks must be at least 1")
        if self.prefetch is not None and self.prefetch < 1:
            raise ValueError("--prefetch must be at least 1 block")
        if self.shares is not None and len(self.shares) != self.ranks:
            if self.ranks == 1:
                self.ranks = len(self.shares)
            else:
                raise ValueError(f"--shares lists {len(self.shares)} values for {self.ranks} ranks")
        if self.window != "auto" and self.window is not None and self.window < 1:
            raise ValueError("--window must be at least 1 block, 'all' or 'auto'")
        if self.budgets is not None and len(self.budgets) != self.ranks:
            raise ValueError(f"{len(self.budgets)} memory budgets for {self.ranks} ranks")
        try:
            parse_speculate(self.speculate, self.draft)
        except TpiError as e:
            raise ValueError(str(e)) from None

    def threads_per_rank(self, local_ranks: int | None = None) -> int:
        """--threads, else this machine's cores shared by the ranks it runs (`local_ranks`,
        default all ranks): a rank on another device is no reason to idle cores here."""
        return self.threads or max(1, usable_cores() // (local_ranks or self.ranks))


def parse_window(text: str) -> Window:
    """'all' -> None, 'auto' -> "auto", '2' -> 2."""
    word = text.strip().lower()
    if word == "all":
        return None
    if word == "auto":
        return "auto"
    try:
        w = int(text)
    except ValueError:
        raise ValueError(f"--window takes a number of blocks, 'all' or 'auto' (got {text!r})"
                         ) from None
    if w < 1:
        raise ValueError("--window must be at least 1 block, 'all' or 'auto'")
    return w
