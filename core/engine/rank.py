"""One rank's share of every decoder layer: streamed blocks, its KV heads, two allreduces a layer.

Every rank runs this same loop over the same residual stream; rank 0 additionally embeds
tokens and produces logits (core/engine/head.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from core.engine.kv_cache import KVCache
from core.engine.layers import LayerShapes, attention, mlp
from core.engine.linear import prepare_block
from core.engine.page_cache import evict
from core.engine.rope import rope_tables
from core.engine.scheduler import MemoryScheduler
from core.engine.stack_decode import StackDecode, build_stack
from core.kernels import library
from core.shard.blocks import attn_block, block_order, mlp_block
from core.shard.manifest import Manifest, verify_rank
from core.shard.verified_read import VerifiedReader

DEFAULT_CONTEXT = 4096


class Allreduce(Protocol):
    """What the layer loop needs from the comm layer."""

    def allreduce_(self, t: torch.Tensor) -> torch.Tensor: ...


class RankRuntime:
    """Runs this rank's slices of all layers for a chunk of positions."""

    def __init__(self, rank_dir: Path, group: Allreduce, window: int | None,
                 context: int = DEFAULT_CONTEXT, evict_streamed: bool = False,
                 prefetch: int | None = None):
        self.rank_dir = Path(rank_dir)
        # Size checks of every block file now: a truncated shard is named at start-up,
        # not half-way through a reply.
        self.manifest: Manifest = verify_rank(self.rank_dir)
        cfg = self.manifest.config
        share = self.manifest.plan.ranks[self.manifest.rank]
        self.cfg = cfg
        self.group = group
        self.shapes = LayerShapes(
            n_q=share.num_kv_heads * cfg.group_size, n_kv=share.num_kv_heads,
            head_dim=cfg.head_dim, eps=cfg.rms_norm_eps,
        )
        self.max_seq = min(context, cfg.max_position_embeddings)
        self.cache = KVCache(cfg.num_layers, share.num_kv_heads, cfg.head_dim, self.max_seq)
        self.cos, self.sin = rope_tables(cfg, self.max_seq)  # [S, hd] each
        self.threads = torch.get_num_threads()  # as the caller set it for this rank
        self._stack: StackDecode | None | bool = None  # not looked at yet
        # Every block is checked against the manifest's sha256 before use (hashed at its
        # first read, re-hashed when its file changes): shards come from other devices.
        self.reader = VerifiedReader(self.rank_dir, self.manifest)
        self.scheduler = MemoryScheduler(
            block_order(cfg.num_layers),
            lambda name: prepare_block(self.reader.read(name)),
            window,
            on_release=self._evict if evict_streamed else None,
            prefetch=prefetch,
        )

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        """x [T, D] hidden states of positions pos..pos+T -> [T, D] after the last layer."""
        T = x.shape[0]
        self.cache.check_room(pos, T)
        if torch.get_num_threads() != self.threads:  # first step on this thread, or the
            torch.set_num_threads(self.threads)  # prefetch thread lowered the default
        cos, sin = self.cos[pos : pos + T, None], self.sin[pos : pos + T, None]  # [T, 1, hd]
        if T == 1 and (st := self._whole_stack()) is not None:
            sh = self.shapes
            return library.kernels().stack_decode(
                x, st.layers, sh.eps, cos[0, 0], sin[0, 0], pos, sh.n_q, sh.n_kv,
                sh.head_dim, self.max_seq, st.inter)
        sched = self.scheduler
        for i in range(self.cfg.num_layers):
            name = attn_block(i)
            h = attention(x, sched.acquire(name), self.shapes, self.cache, i, pos, cos, sin)
            sched.release(name)  # before the allreduce, so the next load overlaps comm
            x = x + self.group.allreduce_(h)
            name = mlp_block(i)
            h = mlp(x, sched.acquire(name), self.shapes.eps)
            sched.release(name)
            x = x + self.group.allreduce_(h)
        return x

    def _whole_stack(self) -> StackDecode | None:
        """The one-call decode of every layer (stack_decode.py), made on first use, when
        this rank is the whole model with every block resident; else None."""
        if self._stack is None:
            self._stack = False
            kern = library.kernels()
            if kern and len(self.manifest.plan.ranks) == 1 and self.scheduler.keep_all:
                blocks = []
                for i in range(self.cfg.num_layers):
                    pair = (self.scheduler.acquire(attn_block(i)),
                            self.scheduler.acquire(mlp_block(i)))
                    blocks.append(pair)  # keep_all: acquired blocks are never freed
                self._stack = build_stack(kern, blocks, self.cache, self.shapes) or False
        return self._stack or None

    def _evict(self, name: str) -> None:
        """Streamed block `name` used: drop its file from the page cache (cold reads)."""
        evict(self.rank_dir / self.manifest.block(name).file)

    def close(self) -> None:
        self.scheduler.close()
