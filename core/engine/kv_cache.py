"""Per-rank KV cache: only this rank's KV heads, preallocated for the whole context.

torch.empty does not touch pages, so a long context costs memory only as it fills.
"""

from __future__ import annotations

import torch

from core.errors import TpiError


class KVCache:
    """k and v of every layer for this rank's `num_kv_heads` heads: [L][h_kv, max_seq, hd]."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, max_seq: int,
                 dtype: torch.dtype = torch.float32):
        self.max_seq = max_seq
        shape = (num_kv_heads, max_seq, head_dim)
        self.k = [torch.empty(shape, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.empty(shape, dtype=dtype) for _ in range(num_layers)]

    def check_room(self, pos: int, n: int) -> None:
        if pos + n > self.max_seq:
            raise TpiError(
                f"the conversation is {pos + n} tokens long, more than the context of "
                f"{self.max_seq}; start a new chat"
            )

    def update(self, layer: int, pos: int, k: torch.Tensor, v: torch.Tensor):
        """Write k, v [h_kv, T, hd] at positions pos..pos+T; return views over 0..pos+T."""
        end = pos + k.shape[1]
        self.k[layer][:, pos:end] = k
        self.v[layer][:, pos:end] = v
        return self.k[layer][:, :end], self.v[layer][:, :end]
