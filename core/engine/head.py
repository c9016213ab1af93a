"""Rank 0's private ends of the model: token embedding, final norm and lm_head.

They stay on the user's machine, so token ids and logits never cross the network.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from core.engine.norm import rms_norm
from core.shard.blocks import EMBED, HEAD
from core.shard.manifest import Manifest, read_block


class Head:
    """Embedding lookup in, logits out."""

    def __init__(self, rank_dir: Path, manifest: Manifest):
        head = read_block(rank_dir, manifest, HEAD)
        self.norm_w = head["norm"]  # [D]
        self.lm_head = head["lm_head"]  # [D, V]
        self.eps = manifest.config.rms_norm_eps
        # Tied models ship no embed block: token t's embedding is column t of lm_head.
        tied = EMBED not in manifest.block_names()
        self.embed_w = None if tied else read_block(rank_dir, manifest, EMBED)["embed"]  # [V, D]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [T] int64 -> [T, D]."""
        if self.embed_w is None:
            return self.lm_head[:, ids].t().contiguous()
        return F.embedding(ids, self.embed_w)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, D] after the last layer -> [T, V] fp32 logits."""
        return (rms_norm(x, self.norm_w, self.eps) @ self.lm_head).float()
