"""Matmuls against block weights in whatever dtype the shard stores (core/shard/blocks.py).

The residual stream and every output are float32; only the weights differ:
  float32   x @ w with w [in, out] (exact: the TP-vs-transformers contract is checked at fp32).
            MKL runs a one-row product (decode) on one thread, which reads ~22 GB/s here;
            as one bmm over column slices of w (views, no copy) torch gives each thread a
            slice: 30.5 -> 23.5 ms for the default model's weights at 2 threads.
  bf16/fp16 x is rounded to the weight dtype, the kernel accumulates in fp32, out -> fp32
  int8      w [out, in] int8 + per-row scales. Decode (few rows) uses torch's int8 weight-only
            kernel, which streams 1 byte per weight; prefill (many rows) dequantizes to bf16
            once per block and runs a bf16 GEMM, which measured ~4x faster than that kernel
            at 512 rows on this CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.shard.blocks import SCALE
from core.shard.quant import dequantize_int8

Block = dict[str, torch.Tensor]
INT8_GEMV_MAX_ROWS = 16  # above this, dequantize and use a GEMM (see module docstring)
ALIGN = 64  # bytes
ACT = torch.bfloat16  # activation dtype fed to the int8 kernel (it takes bf16 scales too)


def prepare_block(block: Block) -> Block:
    """Once per load: int8 scales to the kernel's dtype; int8 matrices 64-byte aligned;
    vectors (norm weights, biases) of a bf16/fp16 shard to fp32, as the residual stream is.

    safetensors hands out tensors at their offset in the file; torch's int8 kernel
    crashes (SIGSEGV) on an int8 matrix that is not 64-byte aligned, so those are copied.
    Other dtypes are left where they are: a copy of every streamed fp32 block would cost
    memory bandwidth and peak memory for nothing.
    """
    for name, t in block.items():
        if name.endswith(SCALE):
            t = t.to(ACT)
        elif t.dim() == 1 and t.dtype != torch.float32:
            t = t.float()  # fused rms_norm wants weight and input in one dtype
        if t.dtype == torch.int8 and t.data_ptr() % ALIGN:
            t = t.clone()
        block[name] = t
    return block


def linear(x: torch.Tensor, block: Block, name: str) -> torch.Tensor:
    """x [T, in] float32 @ block[name] -> [T, out] float32."""
    w = block[name]
    if w.dtype == torch.float32:
        return _fp32(x, w)
    if w.dtype == torch.int8:
        return _int8(x, w, block[name + SCALE])
    return (x.to(w.dtype) @ w).float()


def _fp32(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    n = torch.get_num_threads()
    (T, i), o = x.shape, w.shape[1]
    if T > 1 or n == 1 or o % n:
        return x @ w  # GEMMs (prefill) are threaded by MKL already
    slices = w.view(i, n, o // n).transpose(0, 1)  # [n, in, out/n], strided view of w
    out = torch.bmm(x.expand(n, 1, i), slices)  # [n, 1, out/n], one slice per thread
    return out.transpose(0, 1).reshape(1, o)


def _int8(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # q [out, in] int8, scale [out] bf16
    xa = x.to(ACT)
    if x.shape[0] <= INT8_GEMV_MAX_ROWS:
        return torch._weight_int8pack_mm(xa, q, scale).float()
    # int8 -> bf16 is exact (|q| <= 127 fits bf16's 8-bit significand)
    return (F.linear(xa, q.to(ACT)) * scale).float()


def rows(block: Block, name: str, ids: torch.Tensor) -> torch.Tensor:
    """Rows `ids` of an [out, in]-stored int8 matrix, dequantized -> [T, in] float32."""
    return dequantize_int8(block[name][ids], block[name + SCALE][ids])

