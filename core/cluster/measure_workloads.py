"""What the device measurements run: matrices of one weight format, each its own memory,
and a sliver of a layer through the engine's own attention and MLP functions. Shared by
measure_device.py (read speeds, a layer's fixed cost) and measure_idle.py (what waiting
costs the next half-layer); imports torch, so only the measurement child uses it.
"""

from __future__ import annotations

READ_BYTES = 24 * 2**20  # per format: well past the last-level cache of a home CPU


def matrices(fmt: str, rows: int = 512, cols: int = 2048):
    """(blocks for engine.linear, total weight bytes): READ_BYTES of `fmt` in matrices of
    [rows, cols], each its own memory so nothing is read from cache."""
    import torch

    from core.engine.linear import prepare_block
    from core.shard.blocks import SCALE
    from core.shard.qformats import FORMATS as QFORMATS
    from core.shard.qformats import quantize
    from core.shard.quant import quantize_int8

    w = torch.randn(rows, cols) * 0.02
    if fmt in QFORMATS:
        one = {"wo.0." + fmt: quantize(w, QFORMATS[fmt]).data}
    elif fmt == "int8":
        q, s = quantize_int8(w)
        one = {"wo": q, "wo" + SCALE: s}
    else:
        one = {"wo": w.t().contiguous().to(getattr(torch, fmt))}  # [in, out]
    per = sum(t.nbytes for t in one.values())
    n = max(2, READ_BYTES // per)
    blocks = [prepare_block({k: v.clone() for k, v in one.items()}) for _ in range(n)]
    return blocks, per * n


def sliver_layers(layers: int = 8):
    """(attention half, MLP half, input): the engine's own attention and MLP functions on
    a sliver of a layer (1 KV head, 64 columns) over a 64-token context, so that running
    one reads next to no weights. Each half is `half(h, i)` -> h after layer i's half."""
    import torch

    from core.engine.kv_cache import KVCache
    from core.engine.layers import LayerShapes, attention, mlp
    from core.engine.linear import prepare_block

    d, hd, n_q = 576, 64, 3
    s = LayerShapes(n_q=n_q, n_kv=1, head_dim=hd, eps=1e-5)
    att = prepare_block({"norm": torch.ones(d), "wqkv": torch.randn(d, (n_q + 2) * hd) * .02,
                         "wo": torch.randn(n_q * hd, d) * .02})
    ff = prepare_block({"norm": torch.ones(d), "w_gate_up": torch.randn(d, 128) * .02,
                        "w_down": torch.randn(64, d) * .02})
    cache = KVCache(layers, 1, hd, 128)
    cos, sin = torch.ones(1, 1, hd), torch.zeros(1, 1, hd)
    for i in range(layers):  # a context to attend over, as a short chat has
        for p in range(64):
            cache.k[i][:, p] = 0.1
            cache.v[i][:, p] = 0.1

    def attn_half(h, i: int):
        return h + attention(h, att, s, cache, i, 64, cos, sin)

    def mlp_half(h, i: int):
        return h + mlp(h, ff, s.eps)

    return attn_half, mlp_half, torch.randn(1, d)
