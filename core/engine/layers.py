"""The tensor-parallel slices of one decoder layer, as plain functions over block weights.

Each returns this rank's *partial* output [T, D]; the caller allreduces (sums) the partials
across ranks and adds the residual. Weights come from the block dicts described in
core/shard/blocks.py, so the memory scheduler can stream them in and out freely.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.engine.kv_cache import KVCache
from core.engine.linear import linear
from core.engine.norm import rms_norm
from core.engine.qweight import QWeight
from core.engine.rope import apply_rope
from core.kernels import library


@dataclass(frozen=True)
class LayerShapes:
    """What a rank needs to cut fused projections apart."""

    n_q: int  # this rank's query heads
    n_kv: int  # this rank's KV heads
    head_dim: int
    eps: float


def attention(
    x: torch.Tensor,  # [T, D] residual stream (identical on all ranks)
    w: dict[str, torch.Tensor],
    s: LayerShapes,
    cache: KVCache,
    layer: int,
    pos: int,
    cos: torch.Tensor,  # [T, 1, hd] for positions pos..pos+T (rope.py tables)
    sin: torch.Tensor,  # [T, 1, hd] signed sin
) -> torch.Tensor:
    """This rank's heads of self-attention -> partial o_proj output [T, D]."""
    T, hd = x.shape[0], s.head_dim
    if s.n_kv == 0:
        return torch.zeros_like(x)
    kern = library.kernels()
    if T == 1 and kern and attention_fusable(w, cache, layer):
        # the whole half-layer in one compiled call (decode_layer.c), same numbers
        D, q_out = x.shape[1], (s.n_q + 2 * s.n_kv) * hd
        return kern.attn_decode(x, w["norm"], s.eps, w["wqkv"].c_parts(q_out, D),
                                w.get("bqkv"), cos[0, 0], sin[0, 0], cache.k[layer],
                                cache.v[layer], pos, s.n_q, w["wo"].c_parts(D, s.n_q * hd))
    h = rms_norm(x, w["norm"], s.eps)
    qkv = linear(h, w, "wqkv")  # [T, (n_q + 2 n_kv) * hd]
    if "bqkv" in w:
        qkv += w["bqkv"]
    if T == 1 and kern and "q_norm" not in w and cache.k[layer].dtype == torch.float32:
        # rope, cache write and attention in one compiled step (decode_ops.c)
        out = kern.attend_one(qkv.contiguous(), cos[0, 0], sin[0, 0], cache.k[layer],
                           cache.v[layer], pos, s.n_q)
        return linear(out, w, "wo")
    n_qk = s.n_q + s.n_kv
    qk = qkv[:, : n_qk * hd].view(T, n_qk, hd)  # query then key heads
    v = qkv[:, n_qk * hd :].view(T, s.n_kv, hd).transpose(0, 1)  # [n_kv, T, hd]
    if "q_norm" in w:  # Qwen3: per-head RMSNorm before RoPE
        qk = torch.cat((rms_norm(qk[:, : s.n_q], w["q_norm"], s.eps),
                        rms_norm(qk[:, s.n_q :], w["k_norm"], s.eps)), dim=1)
    qk = apply_rope(qk, cos, sin).transpose(0, 1)  # [n_q + n_kv, T, hd]
    q, k = qk[: s.n_q], qk[s.n_q :]  # [n_q, T, hd], [n_kv, T, hd]
    keys, values = cache.update(layer, pos, k, v)  # [n_kv, pos+T, hd]
    if T == 1:
        out = _attend_one(q, keys, values, s)
    else:
        out = F.scaled_dot_product_attention(
            q.unsqueeze(0), keys.unsqueeze(0), values.unsqueeze(0),
            attn_mask=_causal_mask(T, pos), is_causal=pos == 0, enable_gqa=s.n_q != s.n_kv,
        )[0]  # [n_q, T, hd]
    out = out.transpose(0, 1).reshape(T, s.n_q * hd)
    return linear(out, w, "wo")  # [T, D], partial over heads


def _attend_one(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                s: LayerShapes) -> torch.Tensor:
    """One decode query: q [n_q, 1, hd] over keys/values [n_kv, S, hd] -> [n_q, 1, hd].

    Two small bmm's: torch's CPU flash-attention kernel spent ~2 ms a call here (thread
    start-up for a single query row), more than the layer's weight matmuls.
    """
    hd = s.head_dim
    qg = q.reshape(s.n_kv, s.n_q // s.n_kv, hd)  # query heads of KV head j are rows of j
    scores = torch.bmm(qg, keys.transpose(1, 2)).mul_(hd ** -0.5)  # [n_kv, group, S]
    return torch.bmm(scores.softmax(-1), values).view(s.n_q, 1, hd)


def attention_fusable(w: dict[str, torch.Tensor], cache: KVCache, layer: int) -> bool:
    """Can decode_layer.c's tpi_attn_decode run this attention block: block-quantized
    matrices, no per-head norm (Qwen3), a float32 KV cache."""
    return _fusable(w, "wqkv", "wo") and "q_norm" not in w \
        and cache.k[layer].dtype == torch.float32


def mlp_fusable(w: dict[str, torch.Tensor]) -> bool:
    """Can decode_layer.c's tpi_mlp_decode run this MLP block."""
    return _fusable(w, "w_gate_up", "w_down")


def _fusable(w: dict[str, torch.Tensor], *matrices: str) -> bool:
    """Can decode_layer.c run this half-layer: block-quantized matrices, fp32 vectors."""
    vectors = [w["norm"]] + ([w["bqkv"]] if "bqkv" in w else [])
    return all(isinstance(w[m], QWeight) for m in matrices) and all(
        v.dtype == torch.float32 and v.is_contiguous() for v in vectors)


def _causal_mask(T: int, pos: int) -> torch.Tensor | None:
    """None when nothing is cached (is_causal does it); else [T, pos+T] bool, True = attend."""
    if pos == 0:
        return None
    q_pos = torch.arange(pos, pos + T)[:, None]
    k_pos = torch.arange(pos + T)[None, :]
    return k_pos <= q_pos


def mlp(x: torch.Tensor, w: dict[str, torch.Tensor], eps: float) -> torch.Tensor:
    """This rank's intermediate columns of the SwiGLU MLP -> partial output [T, D]."""
    w_down = w.get("w_down")
    if w_down is None or w_down.numel() == 0:
        return torch.zeros_like(x)
    kern = library.kernels()
    if x.shape[0] == 1 and kern and mlp_fusable(w):
        D, C = x.shape[1], w["w_down"].in_features
        return kern.mlp_decode(x, w["norm"], eps, w["w_gate_up"].c_parts(2 * C, D),
                               w["w_down"].c_parts(D, C), C)  # one compiled call
    h = rms_norm(x, w["norm"], eps)
    gate_up = linear(h, w, "w_gate_up")  # [T, 2C]: gate columns, then up
    if kern:
        return linear(kern.silu_mul(gate_up.contiguous()), w, "w_down")  # [T, D]
    gate, up = gate_up.chunk(2, dim=-1)  # [T, C] each
    return linear(F.silu(gate) * up, w, "w_down")
