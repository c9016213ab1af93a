"""Cases and a numpy reference for the quantized kernels (core/kernels/quant*.c), shared by
test_quant.py (x86 loops in-process) and test_quant_arm.py (ARM loops under qemu).

The reference follows quant.c's arithmetic, not an idealized float product: x is quantized
per 32-block exactly as quantize_acts does (float32 scale max|x| / 127, 1 / scale, round
half to even; Q4_1's m term takes the block's scale * sum(q)), weights come from the gguf
package's dequantize, and the sum is taken in float64. The kernels differ from it only by
their float32 summation, so they are compared within 1e-5 of the sum of the terms'
magnitudes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf.quants import dequantize as gguf_dequantize

QK = 32
FORMATS = {0: ("q8_0", 34, 8), 1: ("q4_0", 18, 2), 2: ("q4_1", 20, 3)}  # id: name, bytes, ggml
RTOL = 1e-5


@dataclass
class Case:
    fmt: int
    x: np.ndarray  # [M, K] float32
    w: np.ndarray  # [N, K / 32 * block bytes] uint8
    nthreads: int = 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.x.shape[0], self.x.shape[1], self.w.shape[0]

    @property
    def name(self) -> str:
        M, K, N = self.shape
        return f"{FORMATS[self.fmt][0]} M={M} K={K} ({K // QK} blocks) N={N} t={self.nthreads}"


def make_case(fmt: int, M: int, K: int, N: int, seed: int, nthreads: int = 1) -> Case:
    """Random weight bytes with finite fp16 headers (some negative, some subnormal), random
    x with one all-zero block; Q8_0 gets a row of -128 against x of -1 (the largest
    products, which the NEON loop adds in int16 pairs)."""
    rng = np.random.default_rng(seed)
    _, bb, _ = FORMATS[fmt]
    nb = K // QK
    w = rng.integers(0, 256, size=(N, nb, bb), dtype=np.uint8)
    d = rng.uniform(-0.02, 0.05, size=(N, nb)).astype(np.float16)
    d.flat[:: 7] = np.float16(2.0**-20)  # subnormal in fp16
    w[:, :, 0:2] = d[..., None].view(np.uint8)
    if fmt == 2:
        w[:, :, 2:4] = rng.uniform(-0.3, 0.3, size=(N, nb, 1)).astype(np.float16).view(np.uint8)
    x = rng.standard_normal((M, K)).astype(np.float32) * np.float32(1.5)
    x[0, :QK] = 0.0
    if fmt == 0 and N > 1 and K >= 2 * QK:
        w[1, :, 2:] = 0x80  # -128
        x[-1, QK : 2 * QK] = -1.0
    return Case(fmt, x, w.reshape(N, nb * bb), nthreads)


def quantize_acts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """quant.c's quantize_acts: int8 q [M, K]; per block [M, K / 32] the float32 scale and
    the float32 scale * sum(q) (Q4_1's m term multiplies it)."""
    M, K = x.shape
    v = x.reshape(M, K // QK, QK)
    scale = (np.abs(v).max(axis=2) / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(scale != 0, np.float32(1.0) / scale, np.float32(0.0)).astype(np.float32)
    q = np.rint(v * inv[..., None]).astype(np.int8)
    sums = (scale * q.astype(np.int32).sum(axis=2).astype(np.float32)).astype(np.float32)
    return q.reshape(M, K), scale, sums


def dequantize(case: Case) -> np.ndarray:
    """The weights [N, K] float32, by gguf's reference."""
    M, K, N = case.shape
    out = gguf_dequantize(case.w, FORMATS[case.fmt][2])
    return np.ascontiguousarray(out, dtype=np.float32).reshape(N, K)


def reference(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(y [M, N] float64, bound [M, N]: the sum of the terms' magnitudes)."""
    M, K, N = case.shape
    nb, bb = K // QK, FORMATS[case.fmt][1]
    q, scale, sums = quantize_acts(case.x)
    xs = q.astype(np.float64) * np.repeat(scale, QK, axis=1)  # exact: int8 * float32
    w = case.w
    if case.fmt == 2:  # d * nibble alone: gguf's dequantize with the mins zeroed
        w = w.reshape(N, nb, bb).copy()
        mins = w[:, :, 2:4].copy().view(np.float16).astype(np.float64).reshape(N, nb)
        w[:, :, 2:4] = 0
        w = w.reshape(N, nb * bb)
    dq = np.ascontiguousarray(gguf_dequantize(w, FORMATS[case.fmt][2]), dtype=np.float64)
    dq = dq.reshape(N, K)
    y = xs @ dq.T
    bound = np.abs(xs) @ np.abs(dq).T
    if case.fmt == 2:
        y += sums.astype(np.float64) @ mins.T
        bound += np.abs(sums.astype(np.float64)) @ np.abs(mins).T
    return y, bound


def standard_cases() -> list[Case]:
    """Every format; M 1, 3 and 9; an odd and an even number of blocks; an odd N (so the
    two-row loops end on a single row); and one product large enough to be threaded."""
    cases = []
    seed = 0
    for fmt in FORMATS:
        for M in (1, 3, 9):
            for nb in (7, 8):
                cases.append(make_case(fmt, M, nb * QK, 13, seed))
                seed += 1
        cases.append(make_case(fmt, 2, 33 * QK, 63, seed, nthreads=2))  # N K >= 65536
        seed += 1
    return cases


def check_product(case: Case, y: np.ndarray, what: str) -> None:
    """y [M, N] as a kernel returned it, against the reference."""
    ref, bound = reference(case)
    assert y.shape == ref.shape, f"{what} {case.name}: shape {y.shape}"
    assert np.isfinite(y).all(), f"{what} {case.name}: non-finite outputs"
    err = np.abs(y.astype(np.float64) - ref)
    worst = np.unravel_index(np.argmax(err - RTOL * bound), err.shape)
    assert (err <= RTOL * bound + 1e-30).all(), (
        f"{what} {case.name}: y{list(worst)} = {y[worst]!r}, reference {ref[worst]!r} "
        f"(error {err[worst]:.3g}, allowed {RTOL * bound[worst]:.3g})"
    )


def check_dequant(case: Case, got: np.ndarray, what: str) -> None:
    want = dequantize(case)
    assert got.shape == want.shape, f"{what} {case.name}: shape {got.shape}"
    same = got.view(np.uint32) == want.view(np.uint32)
    assert same.all(), (
        f"{what} {case.name}: dequant differs from gguf's at {np.argwhere(~same)[:3].tolist()}"
    )
