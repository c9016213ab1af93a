"""The quantized kernels on aarch64 from an x86 machine: quant*.c and quant_driver.c
cross-compiled (static, so qemu needs no aarch64 libraries) and run under qemu-aarch64.
Used by test_quant_arm.py; run as a script it prints the instructions the row loops execute
per block (qemu's exec log, counted inside the loop's function):

    .venv/bin/python -m tests.core.kernels.quant_arm [--cpu cortex-a53]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tests.core.kernels import quant_cases as qc

ROOT = Path(__file__).resolve().parents[3]
KERNELS = ROOT / "core" / "kernels"
DRIVER = Path(__file__).with_name("quant_driver.c")
CC, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
LOOP = re.compile(r"q(8_0|4_0|4_1)_(neon|plain)")  # the row loops' functions (quant*.c)


def missing_tools() -> list[str]:
    return [t for t in (CC, QEMU) if shutil.which(t) is None]


def build_driver(exe: Path) -> Path:
    names = ("quant.c", "quant_x86.c", "quant_vnni.c", "quant_neon.c")
    sources = [KERNELS / n for n in names] + [DRIVER]
    # libgomp's warning about dlopen in a static program is expected
    done = subprocess.run([CC, "-O3", "-fopenmp", "-static", f"-I{KERNELS}", "-o", str(exe),
                           *map(str, sources), "-lm"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return exe


def write_cases(path: Path, cases: list[qc.Case], ldy_pad: int = 0) -> None:
    """quant_driver.c's input: each case with ldy = N + ldy_pad, one repetition."""
    with path.open("wb") as f:
        for c in cases:
            M, K, N = c.shape
            f.write(struct.pack("<2i5q", c.fmt, c.nthreads, M, K, N, N + ldy_pad, 1))
            f.write(np.ascontiguousarray(c.x, dtype="<f4").tobytes())
            f.write(np.ascontiguousarray(c.w).tobytes())


def read_results(data: bytes, cases: list[qc.Case], ldy_pad: int = 0):
    """Per case: ((qmatmul's rc, dequant's rc), y [M, N + ldy_pad], dequant [N, K])."""
    at, out = 0, []
    for c in cases:
        M, K, N = c.shape
        ldy = N + ldy_pad
        rc = struct.unpack_from("<2i", data, at)
        at += 8
        y = np.frombuffer(data, "<f4", M * ldy, at).reshape(M, ldy)
        at += 4 * M * ldy
        deq = np.frombuffer(data, "<f4", N * K, at).reshape(N, K)
        at += 4 * N * K
        out.append((rc, y, deq))
    assert at == len(data), f"{len(data) - at} bytes more than the cases' results"
    return out


def run_driver(exe: Path, cpu: str, isa: str | None, inp: Path, out: Path,
               qemu_args: tuple[str, ...] = ()) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TPI_CHAT_KERNEL_ISA"}
    if isa is not None:
        env["TPI_CHAT_KERNEL_ISA"] = isa
    done = subprocess.run([QEMU, "-cpu", cpu, *qemu_args, str(exe), str(inp), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"qemu -cpu {cpu}: rc {done.returncode}: {done.stderr}"
    return done.stdout


def loop_functions(exe: Path) -> dict[str, tuple[int, int]]:
    """name -> (address, size) of the row loops (each inlines its whole loop)."""
    nm = subprocess.run(["aarch64-linux-gnu-nm", "-S", str(exe)], capture_output=True,
                        text=True, check=True).stdout
    found = {}
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 4 and LOOP.fullmatch(parts[3]):
            found[parts[3]] = (int(parts[0], 16), int(parts[1], 16))
    return found


def executed(exe: Path, cpu: str, isa: str, case: qc.Case, func: tuple[int, int],
             work: Path) -> int:
    """Instructions executed inside `func` while the driver runs `case` once."""
    inp, out, log = work / "count.in", work / "count.out", work / "count.log"
    write_cases(inp, [case])
    lo, size = func
    # nochain: every translated block's run is logged; in_asm: each block's instructions
    run_driver(exe, cpu, isa, inp, out, ("-d", "in_asm,exec,nochain", "-dfilter",
                                         f"0x{lo:x}+0x{size:x}", "-D", str(log)))
    sizes: dict[int, int] = {}
    runs: collections.Counter[int] = collections.Counter()
    start = None
    with log.open() as f:
        for line in f:
            if line.startswith("Trace "):  # Trace 0: host [cs_base/pc/flags/cflags] sym
                runs[int(line.split("[", 1)[1].split("/")[1], 16)] += 1
                start = None
            elif re.match(r"0x[0-9a-f]+:", line):
                pc = int(line.split(":", 1)[0], 16)
                if start is None:
                    start, sizes[pc] = pc, 0
                sizes[start] += 1
            else:
                start = None
    return sum(sizes[pc] * n for pc, n in runs.items())


def per_block(exe: Path, cpu: str, isa: str, fmt: int, M: int, work: Path,
              nb: int = 32) -> float:
    """Instructions per (row of w, row of x, block): 32 rows less 16 rows, over the 16 rows'
    blocks, so the call's and the block sums' costs cancel."""
    func = loop_functions(exe)[f"{qc.FORMATS[fmt][0]}_{isa}"]
    counts = [executed(exe, cpu, isa, qc.make_case(fmt, M, nb * qc.QK, N, seed=1), func, work)
              for N in (16, 32)]
    return (counts[1] - counts[0]) / (16 * nb * M)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", default="cortex-a53", help="qemu's -cpu (default cortex-a53)")
    args = ap.parse_args()
    if missing_tools():
        raise SystemExit(f"needs {' and '.join(missing_tools())}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exe = build_driver(work / "quant_driver")
        print(f"instructions per block and row (qemu -cpu {args.cpu}; 32 blocks a row)")
        print(f"{'':12}{'plain C':>9}{'NEON':>9}{'ratio':>7}")
        for M in (1, 4):
            for fmt in qc.FORMATS:
                plain, neon = (per_block(exe, args.cpu, isa, fmt, M, work)
                               for isa in ("plain", "neon"))
                print(f"{qc.FORMATS[fmt][0]} M={M:<4}{plain:9.1f}{neon:9.1f}"
                      f"{plain / neon:7.1f}", flush=True)


if __name__ == "__main__":
    main()
