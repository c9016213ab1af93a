"""Build one rank's block tensors from a model's HF weights, as core/shard/blocks.py defines.

Each method reads only the rows or columns the rank holds (WeightReader.get_rows/get_cols),
so building a block costs that block's bytes, not the layer's or the model's.
Query head h belongs to KV head h // group (the HF repeat_kv convention), so a rank with KV
heads [ks, ke) holds query heads [ks*group, ke*group).
"""

from __future__ import annotations

import torch

from core.errors import ModelError
from core.model.config import ModelConfig
from core.model.weights import WeightReader
from core.shard.blocks import SCALE
from core.shard.plan import RankShare
from core.shard.quant import quantize_int8

Block = dict[str, torch.Tensor]


class BlockBuilder:
    """Reads HF tensors and fuses them into block dicts for any rank share."""

    def __init__(self, reader: WeightReader, cfg: ModelConfig, dtype: torch.dtype):
        self.reader = reader
        self.cfg = cfg
        self.dtype = dtype
        # int8 shards quantize matrices only; everything else stays float32.
        self.float_dtype = torch.float32 if dtype == torch.int8 else dtype

    def embed(self) -> Block:
        cfg = self.cfg
        w = self._full("model.embed_tokens.weight", (cfg.vocab_size, cfg.hidden_size))
        if self.dtype == torch.int8:  # rows are tokens: per-row scales quantize a lookup table
            return self._matrix("embed", w)
        return {"embed": w}

    def head(self) -> Block:
        cfg = self.cfg
        # Tied models have no lm_head.weight: the embedding is the output matrix, and the
        # splitter then writes no separate embed block.
        name = "model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"
        return {
            "norm": self._full("model.norm.weight", (cfg.hidden_size,)),
            **self._matrix("lm_head", self._full(name, (cfg.vocab_size, cfg.hidden_size))),
        }

    def attn(self, layer: int, share: RankShare) -> Block:
        cfg = self.cfg
        d, hd, group = cfg.hidden_size, cfg.head_dim, cfg.group_size
        p = f"model.layers.{layer}."
        out = {"norm": self._full(p + "input_layernorm.weight", (d,))}
        if share.num_kv_heads == 0:
            return out  # contributes zeros to the allreduce
        a = p + "self_attn."
        q0, q1 = share.kv_start * group * hd, share.kv_end * group * hd
        k0, k1 = share.kv_start * hd, share.kv_end * hd
        out |= self._matrix("wqkv", torch.cat([
            self._rows(a + "q_proj.weight", q0, q1, d),
            self._rows(a + "k_proj.weight", k0, k1, d),
            self._rows(a + "v_proj.weight", k0, k1, d),
        ]))
        if cfg.qkv_bias:
            out["bqkv"] = torch.cat(
                [
                    self._rows(a + "q_proj.bias", q0, q1),
                    self._rows(a + "k_proj.bias", k0, k1),
                    self._rows(a + "v_proj.bias", k0, k1),
                ]
            )
        out |= self._matrix("wo", self._cols(a + "o_proj.weight", q0, q1, d))
        if cfg.qk_norm:
            out["q_norm"] = self._full(a + "q_norm.weight", (hd,))
            out["k_norm"] = self._full(a + "k_norm.weight", (hd,))
        return out

    def mlp(self, layer: int, share: RankShare) -> Block:
        # A rank with zero columns gets empty [D, 0] / [0, D] matrices: the same matmuls
        # then yield zeros, so the engine needs no special case.
        d = self.cfg.hidden_size
        p = f"model.layers.{layer}."
        c0, c1 = share.col_start, share.col_end
        return {
            "norm": self._full(p + "post_attention_layernorm.weight", (d,)),
            **self._matrix("w_gate_up", torch.cat([
                self._rows(p + "mlp.gate_proj.weight", c0, c1, d),
                self._rows(p + "mlp.up_proj.weight", c0, c1, d),
            ])),
            **self._matrix("w_down", self._cols(p + "mlp.down_proj.weight", c0, c1, d)),
        }

    def _matrix(self, name: str, w: torch.Tensor) -> Block:
        """HF's [out, in] matrix as the shard dtype stores it (see core/shard/blocks.py)."""
        if self.dtype == torch.int8:
            q, scale = quantize_int8(w)  # [out, in] int8, [out] float32
            return {name: q, name + SCALE: scale}
        return {name: _t(w)}

    # -- reads, each checked against the shape config.json implies ------------------------

    def _full(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        return self._cast(name, self.reader.get(name), shape)

    def _rows(self, name: str, start: int, end: int, width: int | None = None) -> torch.Tensor:
        shape = (end - start,) if width is None else (end - start, width)
        return self._cast(name, self.reader.get_rows(name, start, end), shape)

    def _cols(self, name: str, start: int, end: int, height: int) -> torch.Tensor:
        return self._cast(name, self.reader.get_cols(name, start, end), (height, end - start))

    def _cast(self, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        # A slice past the end comes back short, so this also catches weights smaller
        # than config.json claims, instead of writing a silently wrong shard.
        if tuple(t.shape) != shape:
            raise ModelError(
                f"tensor {name} does not match config.json (got a slice of shape "
                f"{tuple(t.shape)}, expected {shape})"
            )
        return t.to(self.float_dtype).contiguous()


def _t(w: torch.Tensor) -> torch.Tensor:
    """HF's [out, in] to the [in, out] layout the engine multiplies with (see blocks.py)."""
    return w.t().contiguous()
