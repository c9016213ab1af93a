"""Rank 0's private ends of the model: token embedding, final norm and lm_head.

They stay on the user's machine, so token ids and logits never cross the network.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from core.engine.linear import linear, prepare_block, rows
from core.engine.norm import rms_norm
from core.shard.blocks import EMBED, HEAD
from core.shard.manifest import Manifest, read_block


class Head:
    """Embedding lookup in, logits out."""

    def __init__(self, rank_dir: Path, manifest: Manifest):
        self.head = prepare_block(read_block(rank_dir, manifest, HEAD))
        self.eps = manifest.config.rms_norm_eps
        # Tied models ship no embed block: token t's embedding is lm_head's column t
        # (row t when int8 or a block format stores it [V, D]).
        self.by_rows = self.head["lm_head"].dtype in (torch.int8, torch.uint8)
        tied = EMBED not in manifest.block_names()
        self.table = self.head if tied else prepare_block(read_block(rank_dir, manifest, EMBED))
        self.table_name = "lm_head" if tied else "embed"

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [T] int64 -> [T, D] float32."""
        if self.by_rows:
            return rows(self.table, self.table_name, ids)
        w = self.table[self.table_name]
        if self.table_name == "lm_head":  # [D, V]
            return w[:, ids].t().float().contiguous()
        return F.embedding(ids, w).float()  # embed [V, D]

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, D] after the last layer -> [T, V] fp32 logits."""
        return linear(rms_norm(x, self.head["norm"], self.eps), self.head, "lm_head")
