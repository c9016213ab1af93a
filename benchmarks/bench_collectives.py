"""Allreduce latency on loopback (ours vs raw references) and decode speed vs link latency.

Part 1: one process per rank (spawned), torch.set_num_threads(1) each, T=1 hidden vectors
of 576, 2048 and 8192 floats at 2, 3, 4 and 8 ranks. Every method of
benchmarks/collective_methods.py runs in the same processes, `--repeats` times in rotated
order; reported: the median over repeats of the median us per call as seen by rank 0.
Ratios: star / tcp_star (target <= 1.5x, issue 6; measured with the calls of both
interleaved one by one, "paired", and each method on its own) and star / zmq_pingpong (the 2-rank
ZeroMQ round trip of the same payload; target <= 2x, issue 3).

Part 2: `tpi-chat generate` on the default model at 2 ranks, greedy, with an emulated
per-link latency of 0, 1 and 5 ms, and at 0 ms with the data plane forced onto ZeroMQ
(TPI_DATA_PLANE=zmq), alternating with the fast path `--repeats` times: decode ms/token.

    .venv/bin/python benchmarks/bench_collectives.py [--iters 300] [--repeats 3] [--no-decode]

Writes benchmarks/out/collectives.json (with a markdown `table` for RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from collective_methods import HIDDEN, METHODS, methods_for, rank_main  # noqa: E402

RANKS = (2, 3, 4, 8)
DELAYS_MS = (0.0, 1.0, 5.0)
PROMPT = "Write a short story about a robot who learns to paint."


def run_world(ws: int, methods: list[str], repeats: int, iters: int, warmup: int) -> dict:
    """{method: {hidden: median us}} at `ws` ranks, or {"error": text}."""
    ctx = mp.get_context("spawn")
    qs = [ctx.Queue() for _ in range(ws)]
    result_q = ctx.Queue()
    procs = [ctx.Process(target=rank_main,
                         args=(r, ws, methods, repeats, qs, result_q, iters, warmup))
             for r in range(ws)]
    for p in procs:
        p.start()
    try:
        res = result_q.get(timeout=900)
    except queue.Empty:
        res = {"error": "no result within 900 s"}
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    if "error" in res:
        return res
    return {m: {d: statistics.median(rep[d] for rep in reps) for d in HIDDEN}
            for m, reps in res.items()}


def _ratio_lines(results: dict, num: str, den: str, den_ws: str | None = None) -> list[str]:
    lines = []
    for ws, per in results.items():
        ref = results.get(den_ws or ws, {}).get(den)
        if num not in per or not ref:
            continue
        cells = [f"h={d}: {per[num][str(d)] / ref[str(d)]:.2f}x" for d in HIDDEN]
        lines.append(f"- {ws} ranks: " + ", ".join(cells))
    return lines


def _paired_lines(results: dict) -> list[str]:
    return [f"- {ws} ranks: " + ", ".join(f"h={d}: {per['paired'][str(d)]:.2f}x"
                                         for d in HIDDEN)
            for ws, per in results.items() if "paired" in per]


def collective_table(results: dict) -> str:
    lines = ["| method | ranks | " + " | ".join(f"h={d} (us)" for d in HIDDEN) + " |",
             "|---|---|" + "---|" * len(HIDDEN)]
    for m in (m for m in METHODS if m != "paired"):  # paired holds ratios, not us
        for ws, per in results.items():
            if "error" in per:
                if m == METHODS[0]:
                    lines.append(f"| (all) | {ws} | {per['error']} |")
                continue
            if m in per:
                cells = [f"{per[m][str(d)]:.0f}" for d in HIDDEN]
                lines.append(f"| {m} | {ws} | " + " | ".join(cells) + " |")
    lines += ["", "star (fast path) / tcp_star, calls interleaved one by one in the same "
              "processes (target <= 1.5x):", *_paired_lines(results),
              "", "star (fast path) / tcp_star, each timed on its own in the same run:",
              *_ratio_lines(results, "star", "tcp_star"),
              "", "star (fast path) / zmq_pingpong at 2 ranks, same run (target <= 2x):",
              *_ratio_lines(results, "star", "zmq_pingpong", "2"),
              "", "star over ZeroMQ (transport='zmq') / tcp_star:",
              *_ratio_lines(results, "star_zmq", "tcp_star")]
    return "\n".join(lines)


def _env() -> dict[str, str]:
    from common import bench_env
    return bench_env()


def _generate(delay_ms: float, new_tokens: int, zmq_only: bool) -> dict:
    env = _env()
    if zmq_only:
        env["TPI_DATA_PLANE"] = "zmq"
    cmd = [sys.executable, "-m", "core.cli", "generate", "--ranks", "2", "--temperature", "0",
           "--max-new-tokens", str(new_tokens), "--link-delay-ms", str(delay_ms),
           "--prompt", PROMPT, "--json"]
    out = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                         timeout=900)
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}"}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: res[k] for k in ("decode_ms_per_token", "ttft_ms") if k in res}


def decode_vs_latency(new_tokens: int, repeats: int) -> list[dict]:
    """Decode ms/token at 2 ranks per emulated link delay (fast path), and over ZeroMQ.

    The 0 ms pair (fast path vs ZeroMQ) runs `repeats` times alternating, reported as
    medians; the delayed runs, dominated by the delay, run once.
    """
    subprocess.run([sys.executable, "-m", "core.cli", "split", "--ranks", "2"], env=_env(),
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    runs = [(0.0, zmq_only) for _ in range(repeats) for zmq_only in (True, False)]
    runs += [(d, False) for d in DELAYS_MS if d > 0]
    got: dict[tuple[float, bool], list[dict]] = {}
    for delay, zmq_only in runs:
        res = _generate(delay, new_tokens, zmq_only)
        got.setdefault((delay, zmq_only), []).append(res)
        print(f"decode 2 ranks delay {delay} ms zmq={zmq_only} {res}", file=sys.stderr,
              flush=True)
    rows = []
    for (delay, zmq_only), results in got.items():
        row = {"delay_ms": delay, "transport": "zmq" if zmq_only else "auto",
               "runs": len(results)}
        for k in ("decode_ms_per_token", "ttft_ms"):
            vals = [r[k] for r in results if k in r]
            if vals:
                row[k] = round(statistics.median(vals), 1)
        if not any("decode_ms_per_token" in r for r in results):
            row["error"] = results[0].get("error", "?")
        rows.append(row)
    return rows


def decode_table(rows: list[dict], new_tokens: int) -> str:
    lines = [f"Decode on the default model, 2 ranks, greedy, {new_tokens} new tokens, emulated "
             "latency added to every data-plane send (median of `runs`):", "",
             "| link delay (ms) | data plane | runs | decode ms/token | TTFT ms |",
             "|---|---|---|---|---|"]
    for r in rows:
        plane = "ZeroMQ (forced)" if r["transport"] == "zmq" else "auto (loopback TCP)"
        dec = r.get("decode_ms_per_token", r.get("error", "?"))
        lines.append(f"| {r['delay_ms']:g} | {plane} | {r['runs']} | {dec} | "
                     f"{r.get('ttft_ms', '?')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--ranks", default=",".join(map(str, RANKS)))
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--no-decode", action="store_true", help="skip the decode-vs-latency part")
    args = ap.parse_args()
    methods = args.methods.split(",")
    results: dict[str, dict] = {}
    for ws in (int(r) for r in args.ranks.split(",")):
        res = run_world(ws, methods_for(ws, methods), args.repeats, args.iters, args.warmup)
        results[str(ws)] = res if "error" in res else {
            m: {str(d): v for d, v in row.items()} for m, row in res.items()}
        print(f"x{ws}: {json.dumps(results[str(ws)])}", file=sys.stderr, flush=True)
    table = collective_table(results)
    decode = [] if args.no_decode else decode_vs_latency(args.new_tokens, args.repeats)
    if decode:
        table += "\n\n" + decode_table(decode, args.new_tokens)
    print(table)
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "collectives.json").write_text(json.dumps({
        "unit": "median microseconds per allreduce (rank 0), T=1 float32",
        "iters": args.iters, "warmup": args.warmup, "repeats": args.repeats,
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "results": results, "decode": decode,
        "table": table,
    }, indent=2))


if __name__ == "__main__":
    main()
