"""Peak memory of the sliding window: a random 64-layer Llama (~3.7 GB fp32) on 2 ranks.

The model is pre-split (`tpi-chat split --ranks 2`; a fresh split into a throw-away cache
is measured first and reported on its own line), then `tpi-chat generate` runs window all
and window 2 alternately, same raw prompt, 16 greedy tokens. Peak RSS of all processes =
the sum over ranks of each rank's own peak (ru_maxrss, the CLI's `peak_rss_mb`), checked
against our psutil sampling of the process tree (sum of per-process VmHWM peaks, and the
peak of the summed tree). Target: window 2 at most
0.4 of window all, same tokens. Disk reads and major faults are logged beside the timings.

    .venv/bin/python benchmarks/bench_memory.py [--reps 3] [--window 2]

Writes benchmarks/out/memory.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, PY, bench_env, log, machine, median, run_watched, write_json  # noqa: E402
from models import model_bytes, random_model  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog. A tensor parallel model splits every layer."
MODEL = "llama-64l-random"
RANKS = 2
NEW_TOKENS = 16
TARGET = 0.4


def _tpi(*args: str) -> list[str]:
    return [PY, "-m", "core.cli", *args]


def measure_split(model_dir: Path) -> dict:
    """A fresh split into a throw-away cache: its time, peak RSS and disk reads."""
    tmp = OUT / "cache-split-probe"
    shutil.rmtree(tmp, ignore_errors=True)
    env = {**bench_env(), "TPI_CHAT_CACHE": str(tmp)}
    try:
        w = run_watched(_tpi("split", "--model", str(model_dir), "--ranks", str(RANKS)), env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**w.io_summary(), "stderr_tail": w.stderr.strip()[-300:]}


def run_one(model_dir: Path, window: str) -> dict:
    w = run_watched(_tpi("generate", "--model", str(model_dir), "--raw", "--prompt", PROMPT,
                         "--ranks", str(RANKS), "--window", window, "--temperature", "0",
                         "--max-new-tokens", str(NEW_TOKENS), "--json"))
    res = w.last_json()
    res.pop("text", None)
    return {**res, "sum_rank_peak_rss_mb": round(sum(res["peak_rss_mb"]), 1), **w.io_summary()}


def summarise(runs: list[dict], window: str) -> dict:
    out = {}
    for label in ("all", window):
        rs = [r for r in runs if r["window"] == label]
        out[label] = {
            "sum_rank_peak_rss_mb": median([r["sum_rank_peak_rss_mb"] for r in rs]),
            "peak_rss_mb": [median([r["peak_rss_mb"][i] for r in rs]) for i in range(RANKS)],
            "psutil_sum_peak_rss_mb": median([r["sum_peak_rss_mb"] for r in rs]),
            "psutil_peak_tree_rss_mb": median([r["peak_tree_rss_mb"] for r in rs]),
            "ttft_ms": median([r["ttft_ms"] for r in rs]),
            "decode_ms_per_token": median([r["decode_ms_per_token"] for r in rs]),
            "ru_majflt": median([r["ru_majflt"] for r in rs]),
            "ru_read_mb": median([r["ru_read_mb"] for r in rs]),
            "read_mb_sampled": median([r["read_mb_sampled"] for r in rs]),
            "wall_s": median([r["wall_s"] for r in rs]),
        }
    toks = {tuple(r["token_ids"]) for r in runs}
    a, w = out["all"], out[window]
    return {
        "by_window": out,
        "same_tokens": len(toks) == 1,
        "ratio": round(w["sum_rank_peak_rss_mb"] / a["sum_rank_peak_rss_mb"], 3),
        "ratio_psutil": round(w["psutil_sum_peak_rss_mb"] / a["psutil_sum_peak_rss_mb"], 3),
        "target": TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--window", default="2")
    args = ap.parse_args(argv)
    model_dir = random_model(MODEL, log)
    log(f"{MODEL}: measuring a fresh split for {RANKS} ranks (throw-away cache)")
    split = measure_split(model_dir)
    log(f"{MODEL}: pre-splitting for {RANKS} ranks")
    run_watched(_tpi("split", "--model", str(model_dir), "--ranks", str(RANKS)))
    runs = []
    for rep in range(args.reps):
        order = ("all", args.window) if rep % 2 == 0 else (args.window, "all")
        for window in order:
            log(f"{MODEL} rep {rep + 1}/{args.reps}: 2 ranks, window {window}")
            runs.append({"rep": rep, **run_one(model_dir, window)})
    data = {
        "machine": machine(), "model": MODEL, "model_dir": str(model_dir),
        "model_gb": round(model_bytes(model_dir) / 1e9, 2), "ranks": RANKS,
        "new_tokens": NEW_TOKENS, "prompt": PROMPT, "reps": args.reps,
        "split": split,
        "runs": runs, "summary": summarise(runs, args.window),
    }
    path = write_json("memory.json", data)
    s = data["summary"]
    log(f"ratio window {args.window}/all = {s['ratio']} (target <= {TARGET}); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
