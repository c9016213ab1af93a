"""Every layer of a decode step in one compiled call, when this rank is the whole model.

With one rank there is no allreduce between half-layers, so nothing needs Python between
them; building each half-layer's kernel arguments in Python cost ~2.5 ms a token on the
default model (60 calls), a quarter of its decode time. Here the arguments of all layers
are built once into a C array (decode_layer.c's qlayer) and each token is one call to
tpi_stack_decode, which runs the same two fused kernels per layer as layers.py's path and
adds the residual in float32 as torch does: the numbers are identical.

It applies only when every block stays resident (the scheduler keeps all) and every layer
fits the fused kernels; otherwise the rank runs layer by layer as before.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from core.engine.kv_cache import KVCache
from core.engine.layers import LayerShapes, attention_fusable, mlp_fusable
from core.kernels.library import Kernels, QLayer


@dataclass
class StackDecode:
    """The C array of layers, and what must stay alive while it is used."""

    layers: ctypes.Array
    keep: list
    inter: int  # MLP width C, the same in every layer


def build_stack(kern: Kernels, blocks: list[tuple[dict, dict]], cache: KVCache,
                s: LayerShapes) -> StackDecode | None:
    """blocks: per layer (attention block, MLP block) as the scheduler holds them, resident
    for good. None when some layer cannot run fused (then the caller goes layer by layer)."""
    if s.n_kv == 0:
        return None
    hd, keep, rows = s.head_dim, [], []
    inter = None
    for i, (a, m) in enumerate(blocks):
        if not (attention_fusable(a, cache, i) and mlp_fusable(m)):
            return None
        D, C = a["wo"].out_features, m["w_down"].in_features
        if inter not in (None, C):
            return None
        inter = C
        wqkv = a["wqkv"].c_parts((s.n_q + 2 * s.n_kv) * hd, D)
        wo = a["wo"].c_parts(D, s.n_q * hd)
        gu, down = m["w_gate_up"].c_parts(2 * C, D), m["w_down"].c_parts(D, C)
        bias = a.get("bqkv")
        keep += [a, m, wqkv, wo, gu, down]
        rows.append(QLayer(a["norm"].data_ptr(), ctypes.addressof(wqkv), len(wqkv),
                           None if bias is None else bias.data_ptr(),
                           cache.k[i].data_ptr(), cache.v[i].data_ptr(),
                           ctypes.addressof(wo), len(wo), m["norm"].data_ptr(),
                           ctypes.addressof(gu), len(gu), ctypes.addressof(down), len(down)))
    if inter is None:
        return None
    return StackDecode((QLayer * len(rows))(*rows), keep, inter)
