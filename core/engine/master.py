"""Rank 0's step: embed privately, broadcast hidden states, run its layer slices, make logits.

Token ids go in and logits come out on this machine only; workers see hidden states.
"""

from __future__ import annotations

from typing import Protocol

import torch

from core.engine.head import Head
from core.engine.rank import RankRuntime


class MasterGroup(Protocol):
    """What rank 0 needs from the comm layer (a world of one needs nothing)."""

    world_size: int

    def allreduce_(self, t: torch.Tensor) -> torch.Tensor: ...

    def broadcast_step(self, meta: dict, t: torch.Tensor | None) -> None: ...


class SoloGroup:
    """A world of one: collectives are no-ops."""

    world_size = 1
    rank = 0

    def allreduce_(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def broadcast_step(self, meta: dict, t: torch.Tensor | None) -> None:
        pass

    def close(self) -> None:
        pass


class MasterRunner:
    """Runs one forward step over the whole cluster and returns logits."""

    def __init__(self, head: Head, rank: RankRuntime, group: MasterGroup):
        self.head, self.rank, self.group = head, rank, group

    @property
    def max_seq(self) -> int:
        return self.rank.max_seq

    @torch.inference_mode()
    def step(self, ids: list[int], pos: int, all_logits: bool = False) -> torch.Tensor:
        """Feed ids at positions pos..; logits [V] of the last one, or [T, V] of every
        one with `all_logits` (scoring a text: perplexity). Workers never see the
        difference: the head runs on rank 0 only."""
        x = self.head.embed(torch.tensor(ids, dtype=torch.int64))  # [T, D]
        self.rank.cache.check_room(pos, len(ids))
        self.group.broadcast_step({"op": "step", "pos": pos}, x)
        y = self.rank.forward(x, pos)  # [T, D]
        if all_logits:
            return self.head.logits(y)
        return self.head.logits(y[-1:])[0]  # a reply needs only the last: T x cheaper
