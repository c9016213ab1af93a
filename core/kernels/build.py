"""Find or compile the kernel library (matvec.c, decode_*.c, quant*.c) for this machine.

Order: a library shipped beside the source (the PyInstaller bundle carries one built by
`python -m core.kernels.build DIR`), then one compiled earlier into the cache, then a fresh
compile with `$CC` (default `cc`). Names carry a hash of the source, so an edited kernel is
never mistaken for an old build. The library is compiled for the baseline ISA and picks its
vector loops at run time (see matvec.c), so a bundle's copy runs on any x86-64 machine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from core.model.cache import cache_dir

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / name for name in ("matvec.c", "decode_ops.c", "decode_layer.c", "quant.c",
                                    "quant_x86.c", "quant_vnni.c", "quant_neon.c")]
HEADERS = [HERE / "quant.h", HERE / "decode_ops.h"]
FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC"]
COMPILE_TIMEOUT_S = 120


class KernelBuildError(RuntimeError):
    """The library could not be found or compiled; the message says why."""


def library_name() -> str:
    h = hashlib.sha256(" ".join(FLAGS).encode())
    for src in SOURCES + HEADERS:
        h.update(src.read_bytes())
    digest = h.hexdigest()[:16]
    return f"libtpi_kernels-{digest}.so"


def find_or_build() -> Path:
    """Path of a loadable library for this source; compiles one if needed."""
    missing = [str(s) for s in SOURCES + HEADERS if not s.is_file()]
    if missing:
        raise KernelBuildError(f"kernel source {missing[0]} is missing")
    name = library_name()
    shipped = HERE / name
    if shipped.is_file():
        return shipped
    try:
        target = cache_dir() / "kernels" / name
    except Exception as e:  # noqa: BLE001 - any cache failure just means "no kernels"
        raise KernelBuildError(str(e)) from None
    if not target.is_file():
        compile_to(target)
    return target


def compile_to(target: Path) -> None:
    """Compile the sources into `target`, atomically (ranks starting together may race)."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise KernelBuildError(f"no C compiler ('{cc}') on this machine")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *FLAGS, "-o", tmp, *map(str, SOURCES)], capture_output=True,
                              text=True, timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise KernelBuildError(f"'{cc}' could not compile the kernels: {last}")
        os.replace(tmp, target)
        log.info("compiled decode kernels into %s", target)
        _drop_older(target)
    except subprocess.TimeoutExpired:
        raise KernelBuildError(f"'{cc}' took over {COMPILE_TIMEOUT_S} s") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _drop_older(target: Path) -> None:
    """Builds of older sources are never loaded again (names carry the source hash).
    Unlinking one a running process has mapped is safe: its mapping stays valid."""
    for old in target.parent.glob("libtpi_kernels-*.so"):
        if old != target:
            old.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m core.kernels.build DIR`: write the library for shipping into DIR."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.kernels.build DIR", file=sys.stderr)
        return 2
    target = Path(args[0]) / library_name()
    try:
        compile_to(target)
    except KernelBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
