"""GGUF tensor bytes -> the block formats our shards store (core/shard/qformats.py).

Q8_0, Q4_0 and Q4_1 rows are carried over byte for byte. Q4_K, the bulk of a Q4_K_M file,
is regrouped into Q4_1 with no requantization: a Q4_K super-block is 8 sub-blocks of 32
weights, each w = (d * sc) * q - (dmin * m) with 4-bit q, which is exactly Q4_1's
w = d' * q + m' once d' = d * sc and m' = -dmin * m are rounded to fp16 (the only error).
Every other type is dequantized (gguf's reference code) and requantized: to Q4_1 when it
has at most ~4.5 bits a weight, else to Q8_0. `ConversionReport` measures what that adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from gguf.quants import Q4_K
from gguf.quants import dequantize as gguf_dequantize

from core.shard.qformats import FORMATS, QK, QFormat, QTensor, quantize

CARRIED = {T.Q8_0: "q8_0", T.Q4_0: "q4_0", T.Q4_1: "q4_1"}
_LOW_BIT = {T.Q2_K, T.Q3_K, T.Q4_K, T.IQ1_S, T.IQ1_M, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S,
            T.IQ3_XXS, T.IQ3_S, T.IQ4_NL, T.IQ4_XS}
FLOAT_TYPES = {T.F32: "float32", T.F16: "float16", T.BF16: "bfloat16"}
_SAMPLE_ROWS = 64  # rows per tensor whose conversion error is measured


def native_format(ggml_type: int) -> QFormat:
    """The shard format a GGUF tensor of this type goes to when the file keeps its own."""
    t = T(ggml_type)
    if t in CARRIED:
        return FORMATS[CARRIED[t]]
    return FORMATS["q4_1" if t in _LOW_BIT else "q8_0"]


def convert_rows(raw: np.ndarray, ggml_type: int, in_features: int, fmt: QFormat,
                 report: ConversionReport | None = None, name: str = "") -> QTensor:
    """raw [rows, row bytes] uint8 of a GGUF tensor -> the same rows in `fmt`."""
    t = T(ggml_type)
    raw = np.ascontiguousarray(raw)
    if CARRIED.get(t) == fmt.name:
        out = raw
    elif t == T.Q4_K and fmt.name == "q4_1":
        out = q4k_to_q4_1(raw)
    else:
        w = gguf_dequantize(raw, t).reshape(raw.shape[0], in_features)
        out = quantize(torch.from_numpy(np.ascontiguousarray(w, np.float32)), fmt).data.numpy()
    q = QTensor(fmt, torch.from_numpy(out.reshape(raw.shape[0], -1)), in_features)
    if report is not None and CARRIED.get(t) != fmt.name:
        report.measure(name, t, fmt, raw[:_SAMPLE_ROWS], q.row_slice(0, _SAMPLE_ROWS))
    return q


def q4k_to_q4_1(raw: np.ndarray) -> np.ndarray:
    """Q4_K rows [rows, n*144] -> Q4_1 rows [rows, n*8*20], sub-block by sub-block."""
    rows = raw.shape[0]
    blocks = raw.reshape(-1, 144)  # 256 weights each
    n = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # [n, 1]
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, mn = Q4_K.get_scale_min(blocks[:, 4:16].copy())  # [n, 8] 6-bit each
    # qs: 4 chunks of 32 bytes; chunk c's low nibbles are sub-block 2c, high ones 2c + 1.
    qs = blocks[:, 16:144].reshape(n, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    q = (qs & 0x0F).reshape(n, 8, QK)  # [n, sub-block, weight]
    out = np.empty((n, 8, 20), np.uint8)
    out[:, :, 0:2] = (d * sc).astype(np.float16).reshape(n, 8, 1).view(np.uint8)
    out[:, :, 2:4] = (-(dmin * mn)).astype(np.float16).reshape(n, 8, 1).view(np.uint8)
    out[:, :, 4:] = q[:, :, :16] | (q[:, :, 16:] << 4)  # weight i low, i + 16 high
    return out.reshape(rows, -1)


@dataclass
class _Stat:
    tensors: int = 0
    err2: float = 0.0
    ref2: float = 0.0


@dataclass
class ConversionReport:
    """Added error of each lossy conversion, over sampled rows: RMS(new - old) / RMS(old)."""

    stats: dict[tuple[str, str], _Stat] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def measure(self, name: str, t: T, fmt: QFormat, raw: np.ndarray, got: QTensor) -> None:
        if name in self._seen:  # a tensor read again for another rank counts once
            return
        self._seen.add(name)
        ref = gguf_dequantize(raw, t).astype(np.float64).reshape(got.rows, -1)
        new = got.dequantize().double().numpy()
        s = self.stats.setdefault((t.name, fmt.name), _Stat())
        s.tensors += 1
        s.err2 += float(((new - ref) ** 2).sum())
        s.ref2 += float((ref**2).sum())

    def lines(self) -> list[str]:
        """'Q4_K -> q4_1: 168 tensors, added error 0.012% of the weights' RMS', ..."""
        out = []
        for (src, dst), s in sorted(self.stats.items()):
            rel = math.sqrt(s.err2 / s.ref2) if s.ref2 else 0.0
            out.append(f"{src} -> {dst}: {s.tensors} tensors, added error "
                       f"{100 * rel:.3g}% of the weights' RMS")
        return out

    def to_dict(self) -> dict[str, float]:
        return {f"{a}->{b}": math.sqrt(s.err2 / s.ref2) if s.ref2 else 0.0
                for (a, b), s in self.stats.items()}
