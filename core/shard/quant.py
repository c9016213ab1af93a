"""int8 weight-only quantization: symmetric, one scale per output channel.

A matrix W [out, in] is stored as q = round(W / s) in int8 with s = max|W[row]| / 127 per
row, so W ~= q * s[:, None]. Activations stay in floating point; only weights shrink (4x
against fp32), which is what a memory-bound decode step streams.
"""

from __future__ import annotations

import torch

QMAX = 127


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [out, in] float -> (q [out, in] int8, scale [out] float32)."""
    w = w.float()
    amax = w.abs().amax(dim=1)  # [out]
    # An all-zero row would divide by zero; any positive scale reproduces it exactly.
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    q = torch.round(w / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(q [out, in] int8, scale [out]) -> [out, in] float32."""
    return q.float() * scale.float()[:, None]
