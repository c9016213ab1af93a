"""Build one rank's block tensors from a model's HF weights, as core/shard/blocks.py defines.

Each method reads only the rows or columns the rank holds (get_rows/get_cols of a
WeightReader or GgufWeights), so building a block costs that block's bytes, not the
layer's or the model's. For quantized shard dtypes, matrices are read as blocks
(GgufWeights.qrows/qcols: a GGUF's bytes carried over where the formats allow) or, from a
Hugging Face folder, quantized here.
Query head h belongs to KV head h // group (the HF repeat_kv convention), so a rank with KV
heads [ks, ke) holds query heads [ks*group, ke*group).
"""

from __future__ import annotations

import torch

from core.errors import ModelError
from core.model.config import ModelConfig
from core.model.weights import WeightReader
from core.shard.blocks import SCALE, part_name
from core.shard.layout import FLOAT_DTYPES, is_quantized
from core.shard.plan import RankShare
from core.shard.qformats import FORMATS, QTensor, check_block_aligned, quantize
from core.shard.quant import quantize_int8

Block = dict[str, torch.Tensor]
# A matrix to build: ("rows", HF name, start, end, width) or ("cols", name, start, end, height)
Read = tuple[str, str, int, int, int]


class BlockBuilder:
    """Reads HF tensors and fuses them into block dicts for any rank share."""

    def __init__(self, reader: WeightReader, cfg: ModelConfig, dtype: str):
        self.reader = reader
        self.cfg = cfg
        self.quantized = is_quantized(dtype)
        self.int8 = dtype == "int8"
        # None: each GGUF matrix in its own format (dtype "gguf"); else one block format.
        self.qfmt = None if dtype == "gguf" else dtype
        # Matrices may be int8 or blocks; everything else stays float32 then.
        self.float_dtype = torch.float32 if self.int8 or self.quantized else FLOAT_DTYPES[dtype]

    def embed(self) -> Block:
        cfg = self.cfg
        name, shape = "model.embed_tokens.weight", (cfg.vocab_size, cfg.hidden_size)
        if self.quantized:  # [V, D] blocks: a token's embedding is one row
            return self._qmatrix("embed", [("rows", name, 0, shape[0], shape[1])])
        w = self._full(name, shape)
        if self.int8:  # rows are tokens: per-row scales quantize a lookup table
            return self._matrix("embed", w)
        return {"embed": w}

    def head(self) -> Block:
        cfg = self.cfg
        # Tied models have no lm_head.weight: the embedding is the output matrix, and the
        # splitter then writes no separate embed block.
        name = "model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"
        v, d = cfg.vocab_size, cfg.hidden_size
        return {
            "norm": self._full("model.norm.weight", (d,)),
            **self._fused("lm_head", [("rows", name, 0, v, d)]),
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
        out |= self._fused("wqkv", [
            ("rows", a + "q_proj.weight", q0, q1, d),
            ("rows", a + "k_proj.weight", k0, k1, d),
            ("rows", a + "v_proj.weight", k0, k1, d),
        ])
        if cfg.qkv_bias:
            out["bqkv"] = torch.cat(
                [
                    self._rows(a + "q_proj.bias", q0, q1),
                    self._rows(a + "k_proj.bias", k0, k1),
                    self._rows(a + "v_proj.bias", k0, k1),
                ]
            )
        out |= self._fused("wo", [("cols", a + "o_proj.weight", q0, q1, d)])
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
            **self._fused("w_gate_up", [
                ("rows", p + "mlp.gate_proj.weight", c0, c1, d),
                ("rows", p + "mlp.up_proj.weight", c0, c1, d),
            ]),
            **self._fused("w_down", [("cols", p + "mlp.down_proj.weight", c0, c1, d)]),
        }

    def _fused(self, name: str, reads: list[Read]) -> Block:
        """Matrix `name` made of `reads` stacked row-wise, as the shard dtype stores it."""
        if self.quantized:
            return self._qmatrix(name, reads)
        parts = [self._rows(n, a, b, size) if kind == "rows" else self._cols(n, a, b, size)
                 for kind, n, a, b, size in reads]
        return self._matrix(name, parts[0] if len(parts) == 1 else torch.cat(parts))

    def _qmatrix(self, name: str, reads: list[Read]) -> Block:
        """Blocks of every read, one stored part per run of reads in the same format."""
        runs: list[list[QTensor]] = []
        for read in reads:
            q = self._qread(*read)
            if runs and runs[-1][0].fmt == q.fmt:
                runs[-1].append(q)
            else:
                runs.append([q])
        out = {}
        for i, run in enumerate(runs):
            data = run[0].data if len(run) == 1 else torch.cat([q.data for q in run])
            out[part_name(name, i, run[0].fmt.name)] = data.contiguous()
        return out

    def _qread(self, kind: str, name: str, start: int, end: int, size: int) -> QTensor:
        want = (end - start, size) if kind == "rows" else (size, end - start)
        qread = getattr(self.reader, "qrows" if kind == "rows" else "qcols", None)
        if qread is not None:  # a GGUF: its own blocks where the formats allow
            q = qread(name, start, end, self.qfmt)
        else:
            w = self._rows(name, start, end, size) if kind == "rows" else self._cols(
                name, start, end, size)
            check_block_aligned(0, w.shape[1], f"tensor {name}")
            fmt = FORMATS[self.qfmt]
            q = quantize(w, fmt) if w.numel() else QTensor(
                fmt, torch.empty(w.shape[0], fmt.row_bytes(w.shape[1]), dtype=torch.uint8),
                w.shape[1])
        if (q.rows, q.in_features) != want:
            raise ModelError(f"tensor {name} does not match config.json (got a slice of shape "
                             f"{(q.rows, q.in_features)}, expected {want})")
        return q

    def _matrix(self, name: str, w: torch.Tensor) -> Block:
        """HF's [out, in] matrix as the shard dtype stores it (see core/shard/blocks.py)."""
        if self.int8:
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
