"""decode_layer.c: a decode position's half-layers in one compiled call.

The fused calls must give the step-by-step path's numbers exactly (the same row loops,
norm and attention code), for matrices of several parts in different formats, with a
Qwen2-style bias, over several positions of a KV cache, and must refuse a matrix whose
shape is not the model's before reading it.
"""

from __future__ import annotations

import pytest
import torch

from core.engine import layers
from core.engine.kv_cache import KVCache
from core.engine.layers import LayerShapes
from core.engine.qweight import QWeight
from core.errors import ShardError
from core.kernels import library
from core.shard.qformats import FORMATS, quantize

pytestmark = pytest.mark.skipif(library.kernels() is None, reason="no compiled kernels here")

# D: big enough that the fused calls run two threads (decode_layer.c team())
D, HD, N_Q, N_KV, C = 256, 32, 4, 2, 192


def _qweight(rows_by_format: list[tuple[str, int]], cols: int, gen: torch.Generator
             ) -> QWeight:
    parts = []
    for name, rows in rows_by_format:
        w = torch.randn(rows, cols, generator=gen) * 0.1
        parts.append((FORMATS[name], quantize(w, FORMATS[name]).data))
    return QWeight(parts, cols)


def _attn_block(gen: torch.Generator, bias: bool) -> dict:
    q_out = (N_Q + 2 * N_KV) * HD
    w = {"norm": torch.rand(D, generator=gen) + 0.5,
         # q and k rows in q4_1, v rows in q8_0: a Q4_K_M file's fused wqkv
         "wqkv": _qweight([("q4_1", (N_Q + N_KV) * HD), ("q8_0", N_KV * HD)], D, gen),
         "wo": _qweight([("q4_0", D)], N_Q * HD, gen)}
    if bias:
        w["bqkv"] = torch.randn(q_out, generator=gen)
    return w


def _mlp_block(gen: torch.Generator) -> dict:
    return {"norm": torch.rand(D, generator=gen) + 0.5,
            "w_gate_up": _qweight([("q4_1", C), ("q4_0", C)], D, gen),
            "w_down": _qweight([("q8_0", D)], C, gen)}


def _rope(pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = torch.rand(HD, generator=torch.Generator().manual_seed(1))
    ang = torch.arange(pos + 1)[:, None] * freqs
    return ang.cos()[pos : pos + 1, None], ang.sin()[pos : pos + 1, None]  # [1, 1, hd]


def _attend_steps(w: dict, fused: bool, monkeypatch, threads: int) -> list[torch.Tensor]:
    monkeypatch.setattr(layers, "_fusable", layers._fusable if fused else lambda *a: False)
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(7)
    cache = KVCache(1, N_KV, HD, 16)
    s = LayerShapes(n_q=N_Q, n_kv=N_KV, head_dim=HD, eps=1e-5)
    outs = []
    for pos in range(6):
        x = torch.randn(1, D, generator=gen)
        cos, sin = _rope(pos)
        outs.append(layers.attention(x, w, s, cache, 0, pos, cos, sin))
    return outs + [cache.k[0][:, :6].clone(), cache.v[0][:, :6].clone()]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_attention_equals_the_step_by_step_path_exactly(bias, threads, monkeypatch):
    w = _attn_block(torch.Generator().manual_seed(3), bias)
    before = torch.get_num_threads()
    try:
        fused = _attend_steps(w, True, monkeypatch, threads)
        steps = _attend_steps(w, False, monkeypatch, threads)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(fused, steps, strict=True):
        assert torch.equal(a, b)  # outputs at every position, then the caches
    assert fused[0].abs().max() > 0


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_mlp_equals_the_step_by_step_path_exactly(threads, monkeypatch):
    w = _mlp_block(torch.Generator().manual_seed(4))
    x = torch.randn(1, D, generator=torch.Generator().manual_seed(5))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fused = layers.mlp(x, w, 1e-5)
        monkeypatch.setattr(layers, "_fusable", lambda *a: False)
        steps = layers.mlp(x, w, 1e-5)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(fused, steps) and fused.abs().max() > 0


def test_a_matrix_of_the_wrong_shape_is_refused_before_it_is_read():
    """A shard from a peer may lie: a w_down narrower than gate_up's columns would make the
    kernel read past its rows."""
    gen = torch.Generator().manual_seed(6)
    w = _mlp_block(gen)
    w["w_gate_up"] = _qweight([("q4_1", 2 * C + 32)], D, gen)  # C + 16 gate rows
    with pytest.raises(ShardError, match="damaged"):
        layers.mlp(torch.randn(1, D), w, 1e-5)
    a = _attn_block(gen, bias=False)
    a["wo"] = _qweight([("q4_0", D)], N_Q * HD - 32, gen)
    cos, sin = _rope(0)
    with pytest.raises(ShardError, match="damaged"):
        layers.attention(torch.randn(1, D), a, LayerShapes(N_Q, N_KV, HD, 1e-5),
                         KVCache(1, N_KV, HD, 4), 0, 0, cos, sin)
