"""The ARM row loops (core/kernels/quant_neon.c) on an x86 machine: quant*.c and a driver
(quant_driver.c) cross-compiled for aarch64 and run under qemu-aarch64 (quant_arm.py) on the
newest CPU model (max) and the oldest common one (cortex-a53), both running the "NEON" loop,
with the cap TPI_CHAT_KERNEL_ISA=neon, and with =plain (the C reference). Each is compared
with the numpy reference of quant_cases.py; dequantizing must equal gguf's bit for bit (the
plain C loop's known zero-sign bug xfails: quant_cases.ZERO_SIGN_BUG). CI
installs the cross compiler and qemu (.ci/run); elsewhere they may be missing, and then
these tests are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.core.kernels import quant_arm as arm
from tests.core.kernels import quant_cases as qc

LDY_PAD = 3  # each row of y has 3 columns past N, which the loops must leave alone


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    missing = arm.missing_tools()
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: gcc-aarch64-linux-gnu, "
                    "qemu-user)")
    return arm.build_driver(tmp_path_factory.mktemp("arm") / "quant_driver")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> tuple[list[qc.Case], Path]:
    """The standard cases, then the zero-sign ones."""
    cases = qc.standard_cases() + qc.zero_sign_cases()
    path = tmp_path_factory.mktemp("arm-cases") / "in.bin"
    arm.write_cases(path, cases, LDY_PAD)
    return cases, path


@pytest.mark.parametrize(
    ("cpu", "isa", "expect"),
    [("max", None, "NEON"), ("cortex-a53", None, "NEON"), ("max", "neon", "NEON"),
     ("cortex-a53", "plain", "plain C")],
)
def test_arm_loops_match_the_reference(driver, cases, tmp_path, cpu, isa, expect):
    cases, inp = cases
    out = tmp_path / "out.bin"
    stdout = arm.run_driver(driver, cpu, isa, inp, out)
    assert stdout.splitlines()[0] == f"isa {expect}", stdout
    what = f"-cpu {cpu} ({expect})"
    results = arm.read_results(out.read_bytes(), cases, LDY_PAD)
    assert all(rc == (0, 0) for rc, _, _ in results), [rc for rc, _, _ in results]
    zeros = len(qc.FORMATS)
    for c, (_, y, deq) in zip(cases[:-zeros], results[:-zeros], strict=True):
        N = c.shape[2]
        assert np.isnan(y[:, N:]).all(), f"{what} {c.name}: wrote past N in a row of ldy"
        qc.check_product(c, y[:, :N], what)
        qc.check_dequant(c, deq, what)
    qc.check_zero_signs(expect, cases[-zeros:], [deq for _, _, deq in results[-zeros:]])


def test_neon_loops_run_far_fewer_instructions_than_plain_c(driver, tmp_path):
    """Counted per block and row of w and x on cortex-a53 from qemu's log (quant_arm.py; 24
    runs, ~2 s). gcc 12 -O3 gives 35-38 for M = 1 and 20-24 for M = 4, against 112-127 for
    the plain loops; the bounds leave room for other compilers, not for a loop whose
    registers spill."""
    for M, most in ((1, 44.0), (4, 30.0)):
        for fmt in qc.FORMATS:
            plain, neon = (arm.per_block(driver, "cortex-a53", isa, fmt, M, tmp_path)
                           for isa in ("plain", "neon"))
            name = f"{qc.FORMATS[fmt][0]} M={M}"
            assert neon <= most, f"{name}: NEON {neon:.1f} instructions a block, > {most}"
            assert plain >= 2.5 * neon, f"{name}: plain C {plain:.1f}, NEON {neon:.1f}"
