"""The ARM row loops (core/kernels/quant_neon.c) on an x86 machine: quant*.c and a driver
(quant_driver.c) cross-compiled for aarch64 and run under qemu-aarch64, on a CPU model with
the dot-product extension (max: the "NEON dotprod" loop), one without (cortex-a53: the
"NEON" loop), with the cap TPI_CHAT_KERNEL_ISA=neon, and with =plain (the C reference).
Each is compared with the numpy reference of quant_cases.py; dequantizing must equal gguf's
bit for bit. CI installs the cross compiler and qemu (.ci/run); elsewhere they may be
missing, and then these tests are skipped.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.core.kernels import quant_cases as qc

ROOT = Path(__file__).resolve().parents[3]
KERNELS = ROOT / "core" / "kernels"
DRIVER = Path(__file__).with_name("quant_driver.c")
CC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    missing = [t for t in (CC, QEMU) if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: gcc-aarch64-linux-gnu, "
                    "qemu-user)")
    exe = tmp_path_factory.mktemp("arm") / "quant_driver"
    sources = [KERNELS / n for n in ("quant.c", "quant_x86.c", "quant_neon.c")] + [DRIVER]
    # static: qemu then needs no aarch64 libraries (libgomp's dlopen warning is expected)
    done = subprocess.run([CC, "-O3", "-fopenmp", "-static", f"-I{KERNELS}", "-o", str(exe),
                           *map(str, sources), "-lm"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return exe


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> tuple[list[qc.Case], Path]:
    cases = qc.standard_cases()
    path = tmp_path_factory.mktemp("arm-cases") / "in.bin"
    with path.open("wb") as f:
        for c in cases:
            M, K, N = c.shape
            f.write(struct.pack("<2i5q", c.fmt, c.nthreads, M, K, N, N + 3, 1))
            f.write(np.ascontiguousarray(c.x, dtype="<f4").tobytes())
            f.write(np.ascontiguousarray(c.w).tobytes())
    return cases, path


def run_driver(exe: Path, cpu: str, isa: str | None, inp: Path, out: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TPI_CHAT_KERNEL_ISA"}
    if isa is not None:
        env["TPI_CHAT_KERNEL_ISA"] = isa
    done = subprocess.run([QEMU, "-cpu", cpu, str(exe), str(inp), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"qemu -cpu {cpu}: rc {done.returncode}: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize(
    ("cpu", "isa", "expect"),
    [("max", None, "NEON dotprod"), ("cortex-a53", None, "NEON"), ("max", "neon", "NEON"),
     ("cortex-a53", "plain", "plain C")],
)
def test_arm_loops_match_the_reference(driver, cases, tmp_path, cpu, isa, expect):
    cases, inp = cases
    out = tmp_path / "out.bin"
    stdout = run_driver(driver, cpu, isa, inp, out)
    assert stdout.splitlines()[0] == f"isa {expect}", stdout
    data = out.read_bytes()
    at, what = 0, f"-cpu {cpu} ({expect})"
    for c in cases:
        M, K, N = c.shape
        ldy = N + 3
        rc = struct.unpack_from("<2i", data, at)
        at += 8
        y = np.frombuffer(data, "<f4", M * ldy, at).reshape(M, ldy)
        at += 4 * M * ldy
        deq = np.frombuffer(data, "<f4", N * K, at).reshape(N, K)
        at += 4 * N * K
        assert rc == (0, 0), f"{what} {c.name}: return codes {rc}"
        assert np.isnan(y[:, N:]).all(), f"{what} {c.name}: wrote past N in a row of ldy"
        qc.check_product(c, y[:, :N], what)
        qc.check_dequant(c, deq, what)
    assert at == len(data)
