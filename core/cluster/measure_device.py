"""Measure this device for the planner: weight-read speed per format, layer overhead,
GEMM speed, disk read speed of the shard folder, free memory, what its control-port
messages cost over data-plane ones (measure_messaging.py) and what waiting on a link
costs the next half-layer (measure_idle.py).

Runs in a child process (`python -m core.cluster.measure_device FOLDER`, one JSON line
out), so the worker daemon never imports torch or holds the test buffers, and the child
sees exactly the cores the device's ranks get (its affinity). `measure(folder)` starts
the child and reads its answer; it takes ~3-10 s on a small CPU and at most
CHILD_TIMEOUT_S. The buffers are fixed sizes (measure_workloads.READ_BYTES per format, DISK_BYTES on
disk), whatever a master asks.

The read speed is what the engine's own decode path (core/engine/linear.py) streams
through matrices much larger than any cache; the layer overhead runs the engine's real
attention and MLP functions on a layer too small to read anything, so it is the cost a
layer pays whatever its share (Python, norms, rope, attention over a short context).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from core.cluster.measure_workloads import matrices, sliver_layers
from core.cluster.measures import FORMATS, DeviceSpeed
from core.errors import TpiError

DISK_BYTES = 32 * 2**20
READ_ROUNDS = 4
CHILD_TIMEOUT_S = 120.0  # a busy 2-core box took over 60 s
PROBE_FILE = ".tpi-measure.tmp"


def measure(folder: Path, formats: tuple[str, ...] = FORMATS,
            timeout: float = CHILD_TIMEOUT_S) -> DeviceSpeed:
    """This device's speeds, measured in a child process (TpiError if it fails)."""
    fmts = [f for f in formats if f in FORMATS]
    cmd = [sys.executable, "-m", "core.cluster.measure_device", str(folder), ",".join(fmts)]
    if getattr(sys, "frozen", False):  # the bundle re-runs itself (see rank_host)
        cmd = [sys.executable, "measure-device", str(folder), ",".join(fmts)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]) + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise TpiError(f"measuring this device took more than {timeout:g} s") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise TpiError(f"measuring this device failed: {last[:300]}")
    return DeviceSpeed.from_dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --- in the child -------------------------------------------------------------------


def _best_s(fn, repeat: int, budget_s: float = 0.6) -> float:
    """Fastest of `repeat` runs of fn (stops early past `budget_s`)."""
    best = float("inf")
    end = time.perf_counter() + budget_s
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > end:
            break
    return best


def read_s(fmt: str) -> tuple[float, int]:
    """(fastest seconds to stream one fresh allocation of `fmt` matrices, its bytes)."""
    import torch

    from core.engine.linear import linear

    blocks, total = matrices(fmt)
    x = torch.randn(1, 2048)

    def run() -> None:
        for b in blocks:
            linear(x, b, "wo")

    run()  # first touch: page faults, kernel load
    return _best_s(run, 3), total


def read_speeds(formats: list[str], rounds: int = READ_ROUNDS) -> dict[str, float]:
    """GB/s per format: the bytes over the mean time of `rounds` fresh allocations, the
    formats taken in turn. On the test machine (a VM) one allocation streamed at ~7 or
    ~11 GB/s and held that for seconds, as decode runs do: one allocation's best was one
    of the two, and a prediction from it 24% off the runs' median either way."""
    times: dict[str, list[float]] = {f: [] for f in formats}
    total: dict[str, int] = {}
    for _ in range(rounds):
        for f in formats:
            t, total[f] = read_s(f)
            times[f].append(t)
    return {f: total[f] / (sum(ts) / len(ts)) / 1e9 for f, ts in times.items()}


def layer_ms(layers: int = 8) -> float:
    """One layer's fixed cost: both halves of a sliver layer (`sliver_layers`)."""
    import torch

    attn_half, mlp_half, x = sliver_layers(layers)

    def run() -> None:
        h = x
        for i in range(layers):
            h = mlp_half(attn_half(h, i), i)

    with torch.inference_mode():
        run()
        return _best_s(run, 30) * 1000 / layers


def gflops() -> float:
    import torch

    a, b = torch.randn(64, 1024), torch.randn(1024, 1024)
    a @ b
    return 2 * 64 * 1024 * 1024 / _best_s(lambda: a @ b, 10) / 1e9


def disk_gbps(folder: Path) -> float:
    """Cold reads of a fresh file in `folder` (dropped from the page cache first)."""
    from core.engine.page_cache import evict

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PROBE_FILE
    chunk = os.urandom(2**20)
    try:
        with open(path, "wb") as f:
            for _ in range(DISK_BYTES // len(chunk)):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        evict(path)
        t0 = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            while f.read(4 * 2**20):
                pass
        return DISK_BYTES / max(1e-6, time.perf_counter() - t0) / 1e9
    finally:
        path.unlink(missing_ok=True)


def run_child(folder: Path, formats: list[str]) -> dict:
    import psutil
    import torch

    from core.cluster.measure_idle import resume_ms
    from core.cluster.measure_messaging import per_end_ms
    from core.cpu import usable_cores

    cores = usable_cores()
    torch.set_num_threads(cores)
    msg_ms, frame_ms = per_end_ms()
    speed = DeviceSpeed(
        read_gbps=read_speeds([f for f in formats if f in FORMATS]),
        layer_ms=layer_ms(), gflops=gflops(), disk_gbps=disk_gbps(folder),
        free_bytes=int(psutil.virtual_memory().available), cores=cores,
        measured_at=time.time(), msg_ms=msg_ms, frame_ms=frame_ms, resume_ms=resume_ms())
    return speed.to_dict()


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    formats = [f for f in (argv[1] if len(argv) > 1 else ",".join(FORMATS)).split(",") if f]
    print(json.dumps(run_child(folder, formats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
