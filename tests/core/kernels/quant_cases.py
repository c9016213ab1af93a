"""Cases and a numpy reference for the quantized kernels (core/kernels/quant*.c), shared by
test_quant.py (x86 loops in-process) and test_quant_arm.py (ARM loops under qemu).

The float loops keep x in float32 and widen each block's weights to floats (quant.h), so
the reference is the plain product x @ w.T in float64, w being the gguf package's
dequantize. They differ from it only by their float32 summation (a block's d * sum(q x) and
m * sum(x) taken apart, in their own order), so they are compared within 1e-5 of the sum
of the terms' magnitudes, |x| @ |w|.T; the loops measured stay under 2e-7 of it.
The integer loops (quant_vnni.c) round each 32-block of x to int16 on its own scale
s = max|x| / 32767 first: on top of that, each value may be off by s / 2 times the
magnitude of the integer weight it meets, scaled by d (ROUNDED_ISAS, int16_bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from gguf.quants import dequantize as gguf_dequantize

QK = 32
FORMATS = {0: ("q8_0", 34, 8), 1: ("q4_0", 18, 2), 2: ("q4_1", 20, 3)}  # id: name, bytes, ggml
RTOL = 1e-5
ROUNDED_ISAS = {"AVX-512 VNNI"}  # loops that round x to int16 per block

# Loops whose dequant gives +0.0 where gguf gives -0.0 (d < 0 times a zero weight), by
# format: none since d * q and d * (q - 8) are computed in gguf's order (d * q + m once gave
# +0.0). A listed entry makes its test xfail; any unlisted mismatch fails.
ZERO_SIGN_BUG: dict[str, set[int]] = {}


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
    """Random weight bytes with finite fp16 headers, some negative, every 7th subnormal and
    rows 2 and N - 1 subnormal throughout (a loop flushing them to zero then misses whole
    rows, not a part in 1e5); random x with one all-zero block. Q8_0 gets a row of -128
    (the NEON loop converts q << 24: here INT32_MIN) against a block of x = -1."""
    rng = np.random.default_rng(seed)
    _, bb, _ = FORMATS[fmt]
    nb = K // QK
    w = rng.integers(0, 256, size=(N, nb, bb), dtype=np.uint8)
    d = rng.uniform(-0.02, 0.05, size=(N, nb)).astype(np.float16)
    d.flat[::7] = np.float16(2.0**-20)
    d[[2 % N, N - 1]] = subnormals(rng, (2, nb))
    w[:, :, 0:2] = d[..., None].view(np.uint8)
    if fmt == 2:
        m = rng.uniform(-0.3, 0.3, size=(N, nb)).astype(np.float16)
        m[[2 % N, N - 1]] = subnormals(rng, (2, nb))
        w[:, :, 2:4] = m[..., None].view(np.uint8)
    x = rng.standard_normal((M, K)).astype(np.float32) * np.float32(1.5)
    x[0, :QK] = 0.0
    if fmt == 0 and N > 1 and K >= 2 * QK:
        w[1, :, 2:] = 0x80  # -128
        x[-1, QK : 2 * QK] = -1.0
    return Case(fmt, x, w.reshape(N, nb * bb), nthreads)


def subnormals(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """fp16 subnormals (k * 2^-24, 0 < k < 1024) of either sign."""
    k = rng.integers(1, 1024, size=shape) * rng.choice([-1, 1], size=shape)
    return (k * 2.0**-24).astype(np.float16)


def dequantize(case: Case) -> np.ndarray:
    """The weights [N, K] float32, by gguf's reference."""
    M, K, N = case.shape
    out = gguf_dequantize(case.w, FORMATS[case.fmt][2])
    return np.ascontiguousarray(out, dtype=np.float32).reshape(N, K)


def reference(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(y [M, N] float64, bound [M, N]: the sum of the terms' magnitudes, |x| @ |w|.T)."""
    x = case.x.astype(np.float64)
    w = dequantize(case).astype(np.float64)
    return x @ w.T, np.abs(x) @ np.abs(w).T


def standard_cases() -> list[Case]:
    """Every format; M 1, 3 and 9 (9: two tiles of 4 rows of x and one of 1); an odd and an
    even number of blocks; an odd N (so the two-row loops end on a single row); and two
    products large enough to be threaded at 2 threads: M 1 with N 127 (rows split at 63,
    so one thread's pairs start on an odd row; 4191 blocks, so dequant is threaded too) and
    M 2 with N 63."""
    cases = []
    seed = 0
    for fmt in FORMATS:
        for M in (1, 3, 9):
            for nb in (7, 8):
                cases.append(make_case(fmt, M, nb * QK, 13, seed))
                seed += 1
        for M, N in ((1, 127), (2, 63)):
            cases.append(make_case(fmt, M, 33 * QK, N, seed, nthreads=2))  # N K >= 65536
            seed += 1
    return cases


def int16_bound(case: Case) -> np.ndarray:
    """[M, N]: what rounding x to int16 per block can add, sum over blocks of
    (s / 2) * |d| * sum |integer weights| (nibbles 0..15, or Q8_0's q), s = max|x| / 32767."""
    M, K, N = case.shape
    _, bb, _ = FORMATS[case.fmt]
    nb = K // QK
    raw = case.w.reshape(N, nb, bb)
    d = np.abs(raw[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float64))  # [N, nb]
    if case.fmt == 0:
        q = np.abs(raw[:, :, 2:].view(np.int8).astype(np.float64))  # [N, nb, 32]
    else:
        qs = raw[:, :, (4 if case.fmt == 2 else 2):]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.float64)
    wsum = d * q.sum(axis=2)  # [N, nb]
    s = np.abs(case.x.astype(np.float64)).reshape(M, nb, QK).max(axis=2) / 32767  # [M, nb]
    return (s * 0.5005) @ wsum.T  # 0.5005: x * (32767 / max) is itself rounded


def check_product(case: Case, y: np.ndarray, what: str) -> None:
    """y [M, N] as a kernel returned it, against the reference (`what` names the loops)."""
    ref, bound = reference(case)
    extra = int16_bound(case) if any(what.startswith(i) for i in ROUNDED_ISAS) else 0.0
    assert y.shape == ref.shape, f"{what} {case.name}: shape {y.shape}"
    assert np.isfinite(y).all(), f"{what} {case.name}: non-finite outputs"
    err = np.abs(y.astype(np.float64) - ref)
    allowed = RTOL * bound + extra + 1e-30
    worst = np.unravel_index(np.argmax(err - allowed), err.shape)
    assert (err <= allowed).all(), (
        f"{what} {case.name}: y{list(worst)} = {y[worst]!r}, reference {ref[worst]!r} "
        f"(error {err[worst]:.3g}, allowed {allowed[worst]:.3g})"
    )


def check_dequant(case: Case, got: np.ndarray, what: str) -> None:
    """Dequantized weights equal to gguf's bit for bit, but for the sign of a zero (see
    check_zero_signs)."""
    want = dequantize(case)
    assert got.shape == want.shape, f"{what} {case.name}: shape {got.shape}"
    same = (got.view(np.uint32) == want.view(np.uint32)) | ((got == 0) & (want == 0))
    assert same.all(), (
        f"{what} {case.name}: dequant differs from gguf's at {np.argwhere(~same)[:3].tolist()}"
        f": {got[~same][:3].tolist()} for {want[~same][:3].tolist()}"
    )


def zero_sign_cases() -> list[Case]:
    """A case per format whose weights are all -0.0 in gguf's dequant: d < 0 and q = 0
    (Q4_0: nibbles 8; Q4_1: m = -0.0)."""
    cases = []
    for fmt, (_, bb, _) in FORMATS.items():
        c = make_case(fmt, 1, 4 * QK, 3, seed=40 + fmt)
        w = c.w.reshape(3, 4, bb)
        w[:, :, 0:2] = np.full((3, 4, 1), -0.01, np.float16).view(np.uint8)
        w[:, :, 2:] = 0x88 if fmt == 1 else 0
        if fmt == 2:
            w[:, :, 2:4] = np.full((3, 4, 1), -0.0, np.float16).view(np.uint8)
        assert (dequantize(c) == 0).all() and np.signbit(dequantize(c)).all()
        cases.append(c)
    return cases


def check_zero_signs(isa: str, cases: list[Case], deqs: list[np.ndarray]) -> None:
    """zero_sign_cases() dequantized by `isa`'s loops: bit for bit as gguf's, -0.0 included,
    or xfail if they give +0.0 for just the formats ZERO_SIGN_BUG lists for `isa`."""
    wrong = set()
    for c, deq in zip(cases, deqs, strict=True):
        check_dequant(c, deq, isa)
        if (np.signbit(deq) != np.signbit(dequantize(c))).any():
            wrong.add(c.fmt)
    known = ZERO_SIGN_BUG.get(isa, set())
    assert wrong <= known, f"{isa}: dequant gives +0.0 for gguf's -0.0 in {_names(wrong - known)}"
    assert known <= wrong, f"{isa}: {_names(known - wrong)} dequant fixed: update ZERO_SIGN_BUG"
    if wrong:
        pytest.xfail(f"known bug: {isa} dequant gives +0.0 for gguf's -0.0 in {_names(wrong)}")


def _names(fmts: set[int]) -> str:
    return ", ".join(FORMATS[f][0] for f in sorted(fmts))
