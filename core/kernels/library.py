"""ctypes bindings of the compiled kernels (matvec.c, decode_*.c, quant*.c), loaded once
per process.

`kernels()` is None when the library cannot be had (no compiler, TPI_CHAT_KERNELS=0, a
build error): callers then use torch's kernels. Nothing here crosses the network; the
library is built from the source shipped with the app.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

import torch

from core.kernels.build import KernelBuildError, find_or_build

log = logging.getLogger(__name__)

ENV_VAR = "TPI_CHAT_KERNELS"  # "0" turns the compiled kernels off
LEVELS = {0: "plain C", 1: "AVX2", 2: "AVX-512"}
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
MATVEC_SYMBOLS = {torch.float32: "tpi_matvec_f32", torch.bfloat16: "tpi_matvec_bf16",
                  torch.float16: "tpi_matvec_f16"}


class QPart(ctypes.Structure):
    """One part of a block-quantized matrix as decode_layer.c reads it."""

    _fields_ = [("fmt", ctypes.c_int32), ("w", ctypes.c_void_p), ("rows", ctypes.c_int64)]


def qparts(parts: list[tuple[int, torch.Tensor]]) -> ctypes.Array:
    """(format id, uint8 [rows, row bytes]) parts -> the C array; the caller keeps the
    tensors alive as long as the array is used."""
    return (QPart * len(parts))(*(QPart(fmt, w.data_ptr(), w.shape[0]) for fmt, w in parts))


class QLayer(ctypes.Structure):
    """One layer as tpi_stack_decode reads it (decode_layer.c's qlayer)."""

    _fields_ = [("attn_norm", ctypes.c_void_p), ("wqkv", ctypes.c_void_p),
                ("n_qkv", ctypes.c_int32), ("bqkv", ctypes.c_void_p),
                ("kc", ctypes.c_void_p), ("vc", ctypes.c_void_p),
                ("wo", ctypes.c_void_p), ("n_wo", ctypes.c_int32),
                ("mlp_norm", ctypes.c_void_p), ("w_gate_up", ctypes.c_void_p),
                ("n_gu", ctypes.c_int32), ("w_down", ctypes.c_void_p),
                ("n_down", ctypes.c_int32)]


class Kernels:
    """The loaded library. Tensors must be contiguous and of the dtypes named."""

    def __init__(self, lib: ctypes.CDLL):
        self._matvec = {}
        for dtype, symbol in MATVEC_SYMBOLS.items():
            fn = getattr(lib, symbol)
            fn.argtypes = [_P, _P, _P, _I64, _I64, _INT]
            fn.restype = _INT
            self._matvec[dtype] = fn
        self._i8 = lib.tpi_matmul_i8
        self._i8.argtypes = [_P, _P, _P, _P, _I64, _I64, _I64, _INT]
        self._i8.restype = None
        lib.tpi_i8_level.restype = _INT
        self._norm = lib.tpi_rms_norm
        self._norm.argtypes = [_P, _P, _P, _I64, _I64, ctypes.c_float]
        self._norm.restype = None
        self._silu = lib.tpi_silu_mul
        self._silu.argtypes = [_P, _P, _I64, _I64]
        self._silu.restype = None
        self._attend = lib.tpi_attend_one
        self._attend.argtypes = [_P] * 7 + [_I64] * 5 + [_INT]
        self._attend.restype = None
        self.level = LEVELS.get(lib.tpi_i8_level(), "unknown")
        self._qmm = lib.tpi_qmatmul
        self._qmm.argtypes = [_INT, _P, _P, _P, _I64, _I64, _I64, _I64, _INT]
        self._qmm.restype = _INT
        self._deq = lib.tpi_dequant
        self._deq.argtypes = [_INT, _P, _P, _I64, _INT]
        self._deq.restype = _INT
        self._attn = lib.tpi_attn_decode
        self._attn.argtypes = ([_P, _P, ctypes.c_float, _P, _INT, _P, _P, _P, _P, _P]
                               + [_I64] * 5 + [_P, _INT, _P, _I64, _INT])
        self._attn.restype = _INT
        self._mlp = lib.tpi_mlp_decode
        self._mlp.argtypes = [_P, _P, ctypes.c_float, _P, _INT, _P, _INT, _P, _I64, _I64, _INT]
        self._mlp.restype = _INT
        self._stack = lib.tpi_stack_decode
        self._stack.argtypes = ([_P, _P, _INT, ctypes.c_float, _P, _P] + [_I64] * 7 + [_INT])
        self._stack.restype = _INT
        lib.tpi_quant_isa.restype = ctypes.c_char_p
        self.quant_isa = lib.tpi_quant_isa().decode()

    def has_matvec(self, dtype: torch.dtype) -> bool:
        return dtype in self._matvec

    def matvec(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [1, K] float32 @ w [K, N] (float32, bfloat16 or float16) -> [1, N] float32,
        accumulated in float32."""
        (K, N) = w.shape
        y = torch.empty(1, N)
        if self._matvec[w.dtype](x.data_ptr(), w.data_ptr(), y.data_ptr(), K, N,
                                 torch.get_num_threads()):
            raise MemoryError("out of memory in the decode kernel")
        return y

    def matmul_i8(self, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """x [M, K] float32, q [N, K] int8, scale [N] float32 -> x @ (q * scale).T [M, N]."""
        (N, K), M = q.shape, x.shape[0]
        y = torch.empty(M, N)
        self._i8(x.data_ptr(), q.data_ptr(), scale.data_ptr(), y.data_ptr(), M, K, N,
                 torch.get_num_threads())
        return y

    def qmatmul(self, fmt: int, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor) -> None:
        """out [M, N] (rows may be strided) = x [M, K] float32 @ w.T, for w [N, row bytes]
        uint8 blocks of format `fmt` (core/kernels/quant.h)."""
        M, K = x.shape
        if out.stride(1) != 1 or out.shape != (M, w.shape[0]) or x.stride(1) != 1:
            raise ValueError("qmatmul wants row-contiguous x and out of shape [M, N]")
        rc = self._qmm(fmt, x.data_ptr(), w.data_ptr(), out.data_ptr(), out.stride(0), M, K,
                       w.shape[0], torch.get_num_threads())
        if rc == -1:
            raise MemoryError("out of memory in the quantized matmul kernel")
        if rc:
            raise ValueError(f"the quantized matmul kernel refused format {fmt} or K={K}")

    def dequant(self, fmt: int, w: torch.Tensor, n_values: int) -> torch.Tensor:
        """The first `n_values` (a multiple of 32) weights of contiguous blocks `w` -> fp32."""
        out = torch.empty(n_values)
        if self._deq(fmt, w.data_ptr(), out.data_ptr(), n_values // 32,
                     torch.get_num_threads()):
            raise ValueError(f"the dequantize kernel refused format {fmt}")
        return out

    def rms_norm(self, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        """x [T, D] float32, w [D] float32 -> [T, D], as HF's LlamaRMSNorm."""
        T, D = x.shape
        out = torch.empty(T, D)
        self._norm(x.data_ptr(), w.data_ptr(), out.data_ptr(), T, D, eps)
        return out

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """gate_up [T, 2C] float32 -> silu(gate) * up [T, C]."""
        T, C = gate_up.shape[0], gate_up.shape[1] // 2
        out = torch.empty(T, C)
        self._silu(gate_up.data_ptr(), out.data_ptr(), T, C)
        return out

    def attend_one(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   k_cache: torch.Tensor, v_cache: torch.Tensor, pos: int,
                   n_q: int) -> torch.Tensor:
        """One decode position; qkv [1, (n_q + 2 n_kv) hd] float32 is rotated in place.

        cos, sin [hd] (rope.py's tables at `pos`); caches [n_kv, max_seq, hd] get this
        position's k and v. Returns the attention output [1, n_q hd].
        """
        n_kv, max_seq, hd = k_cache.shape
        out = torch.empty(1, n_q * hd)
        scores = torch.empty(n_q * (pos + 1))
        self._attend(qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), k_cache.data_ptr(),
                     v_cache.data_ptr(), out.data_ptr(), scores.data_ptr(), n_q, n_kv, hd,
                     max_seq, pos, torch.get_num_threads())
        return out

    def attn_decode(self, x: torch.Tensor, norm: torch.Tensor, eps: float, wqkv: ctypes.Array,
                    bias: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor,
                    k_cache: torch.Tensor, v_cache: torch.Tensor, pos: int, n_q: int,
                    wo: ctypes.Array) -> torch.Tensor:
        """x [1, D] -> this rank's attention partial [1, D] for one position, in one call
        (decode_layer.c); wqkv and wo are `qparts` arrays. Caches [n_kv, max_seq, hd]."""
        n_kv, max_seq, hd = k_cache.shape
        x, D = x.contiguous(), x.shape[1]
        out = torch.empty(1, D)
        rc = self._attn(x.data_ptr(), norm.data_ptr(), eps, wqkv, len(wqkv),
                        None if bias is None else bias.data_ptr(), cos.data_ptr(),
                        sin.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), n_q, n_kv, hd,
                        max_seq, pos, wo, len(wo), out.data_ptr(), D, torch.get_num_threads())
        _check(rc, "attention")
        return out

    def mlp_decode(self, x: torch.Tensor, norm: torch.Tensor, eps: float,
                   w_gate_up: ctypes.Array, w_down: ctypes.Array, C: int) -> torch.Tensor:
        """x [1, D] -> this rank's MLP partial [1, D] for one position, in one call."""
        x, D = x.contiguous(), x.shape[1]
        out = torch.empty(1, D)
        rc = self._mlp(x.data_ptr(), norm.data_ptr(), eps, w_gate_up, len(w_gate_up), w_down,
                       len(w_down), out.data_ptr(), D, C, torch.get_num_threads())
        _check(rc, "MLP")
        return out

    def stack_decode(self, x: torch.Tensor, layers: ctypes.Array, eps: float,
                     cos: torch.Tensor, sin: torch.Tensor, pos: int, n_q: int, n_kv: int,
                     hd: int, max_seq: int, C: int) -> torch.Tensor:
        """x [1, D] -> x after every layer of `layers` (a QLayer array) for one position,
        when this rank holds the whole model. cos, sin [hd] at `pos`."""
        x = x.contiguous().clone()
        rc = self._stack(x.data_ptr(), layers, len(layers), eps, cos.data_ptr(),
                         sin.data_ptr(), n_q, n_kv, hd, max_seq, pos, x.shape[1], C,
                         torch.get_num_threads())
        _check(rc, "layer stack")
        return x


def _check(rc: int, what: str) -> None:
    if rc == -1:
        raise MemoryError(f"out of memory in the fused {what} kernel")
    if rc:
        raise ValueError(f"the fused {what} kernel refused the matrices' formats or widths")


@functools.cache
def kernels() -> Kernels | None:
    """The process's kernels, or None (with the reason logged once)."""
    if os.environ.get(ENV_VAR, "1") == "0":
        log.info("compiled decode kernels are off (%s=0)", ENV_VAR)
        return None
    try:
        k = Kernels(ctypes.CDLL(str(find_or_build())))
    except (KernelBuildError, OSError, AttributeError) as e:
        log.warning("compiled decode kernels unavailable, using torch's: %s", e)
        return None
    log.info("compiled decode kernels loaded (int8 loop: %s, quantized: %s)", k.level,
             k.quant_isa)
    return k
