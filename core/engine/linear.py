"""Matmuls against block weights in whatever dtype the shard stores (core/shard/blocks.py).

The residual stream and every output are float32; only the weights differ:
  float32   x @ w with w [in, out] (exact: the TP-vs-transformers contract is checked at fp32).
            Decode (one row) runs the compiled kernel (core/kernels), which streams the
            weights at the memory's speed: 26 -> 16 ms for the default model's weights at 2
            threads. Without it, one bmm over column slices of w (views, no copy), since
            MKL runs a one-row product on one thread (~22 GB/s here). Prefill: MKL's GEMM.
  bf16/fp16 decode: the compiled kernel widens each weight to fp32 (x stays fp32); prefill
            and the fallback round x to the weight dtype, accumulate in fp32, out -> fp32
  int8      w [out, in] int8 + per-row scales. Decode (few rows) uses the compiled kernel
            (fp32 activations, 1 byte per weight streamed: 11 -> 6 ms for the default
            model), else torch's int8 weight-only kernel (bf16 activations); prefill (many
            rows) dequantizes to bf16 once per block and runs a bf16 GEMM, which measured
            ~4x faster than torch's int8 kernel at 512 rows on this CPU.
  q8_0/q4_0/q4_1  llama.cpp's blocks, [out, in] (qweight.py): the compiled kernel for any
            number of rows (integer dot products against activations quantized per block).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.engine.qweight import QWeight, gather_qweights
from core.kernels import library
from core.shard.blocks import SCALE
from core.shard.quant import dequantize_int8

Block = dict[str, torch.Tensor]
INT8_GEMV_MAX_ROWS = 16  # above this, dequantize and use a GEMM (see module docstring)
ALIGN = 64  # bytes
ACT = torch.bfloat16  # activation dtype fed to torch's int8 kernel (it takes bf16 scales too)


def prepare_block(block: Block) -> Block:
    """Once per load: int8 scales to the decode kernel's dtype (fp32 for the compiled one,
    bf16 for torch's); int8 matrices 64-byte aligned;
    vectors (norm weights, biases) of a bf16/fp16 shard to fp32, as the residual stream is.

    safetensors hands out tensors at their offset in the file; torch's int8 kernel
    crashes (SIGSEGV) on an int8 matrix that is not 64-byte aligned, so those are copied.
    Other dtypes are left where they are: a copy of every streamed fp32 block would cost
    memory bandwidth and peak memory for nothing.
    """
    scale_dtype = torch.float32 if library.kernels() else ACT
    gather_qweights(block)
    for name, t in block.items():
        if isinstance(t, QWeight):
            continue
        if name.endswith(SCALE):
            t = t.to(scale_dtype).contiguous()
        elif t.dim() == 1 and t.dtype != torch.float32:
            t = t.float()  # fused rms_norm wants weight and input in one dtype
        if t.dtype == torch.int8 and t.data_ptr() % ALIGN:
            t = t.clone()
        block[name] = t
    return block


def linear(x: torch.Tensor, block: Block, name: str) -> torch.Tensor:
    """x [T, in] float32 @ block[name] -> [T, out] float32."""
    w = block[name]
    if isinstance(w, QWeight):
        return w.matmul(x)
    if w.dtype == torch.int8:
        return _int8(x, w, block[name + SCALE])
    kern = library.kernels()
    if x.shape[0] == 1 and kern and kern.has_matvec(w.dtype) and w.is_contiguous():
        return kern.matvec(x.contiguous(), w)  # decode: compiled, at memory speed
    if w.dtype == torch.float32:
        return _fp32(x, w)
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
    # q [out, in] int8, scale [out] fp32 (compiled kernel) or bf16 (see prepare_block)
    if x.shape[0] <= INT8_GEMV_MAX_ROWS:
        kern = library.kernels()
        if kern and scale.dtype == torch.float32:
            return kern.matmul_i8(x.contiguous(), q, scale)
        return torch._weight_int8pack_mm(x.to(scale.dtype), q, scale).float()
    xa = x.to(ACT)
    # int8 -> bf16 is exact (|q| <= 127 fits bf16's 8-bit significand)
    return (F.linear(xa, q.to(ACT)) * scale).float()


def rows(block: Block, name: str, ids: torch.Tensor) -> torch.Tensor:
    """Rows `ids` of an [out, in]-stored int8 or block matrix, dequantized -> [T, in] float32."""
    if isinstance(block[name], QWeight):
        return block[name].rows(ids)
    return dequantize_int8(block[name][ids], block[name + SCALE][ids])

