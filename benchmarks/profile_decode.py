"""Where one of our decode steps spends its time: the quantized matmul kernel vs the rest.

    .venv/bin/python benchmarks/profile_decode.py --gguf FILE [--threads 2] [--rounds 3]

Our engine at 1 rank, all resident, on FILE with --dtype auto (as bench_llamacpp's *ours
auto* rows), decodes --tokens greedy tokens after the chat prompt of benchmarks/out/ids.json
(written by bench_llamacpp.py) three ways, in turn, --rounds times: as is; with the
compiled quantized matmul (core.kernels.library qmatmul) timed by a wrapper; with it
replaced by a no-op, which leaves attention, norms, SiLU, Python dispatch and allocations
(the tokens are then garbage, the work per token the same). Then the kernel alone on each
matrix shape of the model, hot in cache. Prints medians, ms per token. Run by hand; the
kernel is replaced in this process only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import torch
    from common import OUT
    from llamacpp_worker import Ours

    from core.kernels import library
    from core.model.model_dir import resolve_model

    torch.set_num_threads(args.threads)
    prompt = json.loads((OUT / "ids.json").read_text())["prompt"]
    engine = Ours(str(resolve_model(args.gguf)), "auto", args.threads)
    kern = library.kernels()
    if kern is None:
        raise SystemExit("no compiled kernels here (TPI_CHAT_KERNELS=0 or no C compiler)")
    cls = type(kern)
    real = cls.qmatmul
    spent = [0.0]
    calls = [0]

    def timed(self, *a):
        t0 = time.perf_counter()
        real(self, *a)
        spent[0] += time.perf_counter() - t0
        calls[0] += 1

    def noop(self, *a):
        calls[0] += 1

    def decode() -> float:
        engine.reset()
        tok = engine.feed(prompt)
        t0 = time.perf_counter()
        for _ in range(args.tokens):
            tok = engine.feed([tok])
        return (time.perf_counter() - t0) * 1000 / args.tokens

    decode()  # warm-up
    res: dict[str, list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        for mode, fn in (("as is", real), ("kernel timed", timed), ("kernel skipped", noop)):
            cls.qmatmul = fn
            spent[0], calls[0] = 0.0, 0
            engine.reset()
            ms = decode()
            res.setdefault(mode, []).append((ms, spent[0] * 1000 / args.tokens,
                                             calls[0] / args.tokens))
    cls.qmatmul = real
    for mode, rs in res.items():
        print(f"{mode:15s} {statistics.median(r[0] for r in rs):7.2f} ms/token"
              + (f", in the kernel {statistics.median(r[1] for r in rs):.2f} ms"
                 if mode == "kernel timed" else "")
              + (f" ({statistics.median(r[2] for r in rs):.0f} kernel calls a token)"
                 if mode != "as is" else ""))
    _kernel_alone(engine, kern, args.threads)
    return 0


def _kernel_alone(engine, kern, threads: int) -> None:
    """Each distinct (format, shape) matrix of rank 0, timed alone and hot in cache."""
    import torch

    from core.engine.qweight import QWeight

    mats: dict[tuple, list] = {}  # (format, rows, cols) -> [format, data, cols, count]
    for obj in _walk(engine.cluster):
        if isinstance(obj, QWeight):
            for fmt, data in obj.parts:
                key = (fmt.name, data.shape[0], obj.in_features)
                mats.setdefault(key, [fmt, data, obj.in_features, 0])[3] += 1
    if not mats:
        print("(no quantized matrices found to time alone)")
        return
    total = 0.0
    for (name, rows, in_f), (fmt, data, _, count) in sorted(mats.items()):
        x = torch.randn(1, in_f)
        out = torch.empty(1, data.shape[0])
        reps = max(5, int(2e7 // max(1, data.numel())))
        for _ in range(5):
            kern.qmatmul(fmt.kernel_id, x, data, out)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                kern.qmatmul(fmt.kernel_id, x, data, out)
            times.append((time.perf_counter() - t0) / reps * 1000)
        ms = statistics.median(times)
        total += ms * count
        print(f"  {name} {rows} x {in_f} (x{count}): {ms * 1000:.0f} us, "
              f"{data.numel() / ms / 1e6:.1f} GB/s")
    print(f"kernel alone, hot in cache, {threads} threads: {total:.2f} ms a token")


def _walk(root, seen=None, depth=0):
    """Objects reachable from `root` through attributes, lists and dicts (a few levels)."""
    seen = set() if seen is None else seen
    if id(root) in seen or depth > 8:
        return
    seen.add(id(root))
    yield root
    children = []
    if isinstance(root, dict):
        children = list(root.values())
    elif isinstance(root, (list, tuple)):
        children = list(root)
    elif hasattr(root, "__dict__") and type(root).__module__.startswith("core"):
        children = list(vars(root).values())
    for c in children:
        yield from _walk(c, seen, depth + 1)


if __name__ == "__main__":
    sys.exit(main())
