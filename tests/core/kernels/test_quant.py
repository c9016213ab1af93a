"""The quantized kernels (core/kernels/quant*.c) through core.kernels.library, against the
numpy reference of quant_cases.py: every loop this CPU has (the choice is made once per
process, so each TPI_CHAT_KERNEL_ISA setting runs in a process of its own), products
written into a strided slice of a wider buffer, dequantizing bit for bit as gguf does (a
known bug in quant.c's and the x86 loops' signs of zero xfails: quant_cases.ZERO_SIGN_BUG),
and the refusals. test_quant_arm.py runs the ARM loops under qemu.

The loops over every setting are slow (a process each, importing torch); the fast tests take
this process's loop through the same cases.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.kernels import build, library
from tests.core.kernels import quant_cases as qc

ROOT = Path(__file__).resolve().parents[3]
PAD = 3  # columns of the output buffer left of the product (and PAD + 4 right of it)

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here")

RUN_CASES = """
import sys
import numpy as np
import torch
from core.kernels.library import kernels

k = kernels()
cases = np.load(sys.argv[1])
out = {}
for i in range(int(cases["n"])):
    fmt, nthreads = (int(v) for v in cases[f"meta{i}"])
    x, w = torch.from_numpy(cases[f"x{i}"]), torch.from_numpy(cases[f"w{i}"])
    (M, K), N = x.shape, w.shape[0]
    torch.set_num_threads(nthreads)
    buf = torch.full((M, N + {pad} * 2 + 4), float("nan"))
    k.qmatmul(fmt, x, w, buf[:, {pad} : {pad} + N])
    out[f"y{i}"] = buf.numpy()
    out[f"deq{i}"] = k.dequant(fmt, w, N * K).view(N, K).numpy()
np.savez(sys.argv[2], **out)
print(k.quant_isa)
""".replace("{pad}", str(PAD))


def expected_isa(cap: str | None) -> str:
    """The loops quant.c picks on this CPU under TPI_CHAT_KERNEL_ISA=cap."""
    if cap == "plain":
        return "plain C"
    cpuinfo = Path("/proc/cpuinfo").read_text()
    first = next((ln for ln in cpuinfo.splitlines() if ln.startswith(("flags", "Features"))),
                 "")
    flags = set(first.split(":", 1)[-1].split())
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        if cap == "neon" or not {"avx2", "fma"} <= flags:
            return "plain C"
        avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
        if avx512 and "avx512_vnni" in flags and cap in (None, "vnni"):
            return "AVX-512 VNNI"
        return "AVX-512" if avx512 and cap != "avx2" else "AVX2"
    if machine in ("aarch64", "arm64"):
        return "NEON" if "asimd" in flags else "plain C"
    return "plain C"


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> tuple[list[qc.Case], Path]:
    """The standard cases, then the zero-sign ones."""
    build.find_or_build()  # once, into the session's cache, before the processes below
    cases = qc.standard_cases() + qc.zero_sign_cases()
    arrays = {"n": np.array(len(cases))}
    for i, c in enumerate(cases):
        arrays |= {f"meta{i}": np.array([c.fmt, c.nthreads]), f"x{i}": c.x, f"w{i}": c.w}
    path = tmp_path_factory.mktemp("quant") / "cases.npz"
    np.savez(path, **arrays)
    return cases, path


@pytest.mark.slow  # a process per loop, each importing torch: ~4 s apiece
# No uncapped case here: test_this_process_loop_matches_the_reference runs the same cases
# and checks on the loop this CPU picks by itself, in this process (one torch import less).
@pytest.mark.parametrize("cap", ["plain", "avx2", "avx512", "neon"])
def test_every_loop_matches_the_reference(cases, tmp_path, cap):
    cases, inp = cases
    env = {k: v for k, v in os.environ.items() if k != "TPI_CHAT_KERNEL_ISA"}
    if cap is not None:
        env["TPI_CHAT_KERNEL_ISA"] = cap
    out = tmp_path / "out.npz"
    done = subprocess.run([sys.executable, "-c", RUN_CASES, str(inp), str(out)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    isa = done.stdout.strip()
    assert isa == expected_isa(cap)
    got = np.load(out)
    zeros = len(qc.FORMATS)
    for i, c in enumerate(cases[:-zeros]):
        M, K, N = c.shape
        y = got[f"y{i}"]
        outside = np.concatenate([y[:, :PAD], y[:, PAD + N :]], axis=1)
        assert np.isnan(outside).all(), f"{isa} {c.name}: wrote outside its slice"
        qc.check_product(c, y[:, PAD : PAD + N], isa)
        qc.check_dequant(c, got[f"deq{i}"], isa)
    qc.check_zero_signs(isa, cases[-zeros:],
                        [got[f"deq{i}"] for i in range(len(cases) - zeros, len(cases))])


@pytest.fixture(scope="module")
def k() -> library.Kernels:
    got = library.kernels()
    assert got is not None, "a C compiler is here but the kernels did not load (see the log)"
    return got


def run_in_process(k: library.Kernels, c: qc.Case) -> tuple[np.ndarray, np.ndarray]:
    """(the product written into columns PAD..PAD + N of a NaN buffer, the dequant)."""
    M, K, N = c.shape
    x, w = torch.from_numpy(c.x), torch.from_numpy(c.w)
    threads = torch.get_num_threads()
    torch.set_num_threads(c.nthreads)
    try:
        buf = torch.full((M, N + PAD * 2 + 4), float("nan"))
        k.qmatmul(c.fmt, x, w, buf[:, PAD : PAD + N])
    finally:
        torch.set_num_threads(threads)
    return buf.numpy(), k.dequant(c.fmt, w, N * K).view(N, K).numpy()


def test_this_process_loop_matches_the_reference(k):
    assert k.quant_isa == expected_isa(os.environ.get("TPI_CHAT_KERNEL_ISA") or None)
    for c in qc.standard_cases():
        M, K, N = c.shape
        y, deq = run_in_process(k, c)
        outside = np.concatenate([y[:, :PAD], y[:, PAD + N :]], axis=1)
        assert np.isnan(outside).all(), f"{k.quant_isa} {c.name}: wrote outside its slice"
        qc.check_product(c, y[:, PAD : PAD + N], k.quant_isa)
        qc.check_dequant(c, deq, k.quant_isa)
    zeros = qc.zero_sign_cases()
    qc.check_zero_signs(k.quant_isa, zeros, [run_in_process(k, c)[1] for c in zeros])


@pytest.mark.parametrize("fmt", [-2, 3])
def test_a_bad_format_is_refused(k, fmt):
    x, w = torch.ones(1, 32), torch.zeros(2, 34, dtype=torch.uint8)
    with pytest.raises(ValueError, match=f"refused format {fmt}"):
        k.qmatmul(fmt, x, w, torch.empty(1, 2))
    with pytest.raises(ValueError, match=f"refused format {fmt}"):
        k.dequant(fmt, w, 64)


def test_k_off_the_block_size_is_refused(k):
    x, w = torch.ones(1, 40), torch.zeros(2, 34, dtype=torch.uint8)
    with pytest.raises(ValueError, match="K=40"):
        k.qmatmul(0, x, w, torch.empty(1, 2))

