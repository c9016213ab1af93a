"""Run every benchmark in sequence and write benchmarks/RESULTS.md (`make bench`).

  1. benchmarks/bench_collectives.py  (if present; another engineer's allreduce benchmark)
  2. benchmarks/bench_engine.py       ours vs transformers, default model and a random 1.1B
  3. benchmarks/bench_memory.py       window 2 vs all on a random 64-layer Llama
     benchmarks/bench_streaming.py    window 2 vs all decode speed: warm, cold, link latency
  4. benchmarks/bench_llamacpp.py     only with LLAMA_CPP=1: ours vs llama.cpp vs transformers

Each is its own subprocess writing benchmarks/out/<name>.json; a failing benchmark is
reported in RESULTS.md and the others still run.

    .venv/bin/python benchmarks/run_all.py            # full run (~25 min), rewrites RESULTS.md
    .venv/bin/python benchmarks/run_all.py --quick    # smoke run: default model, 1 repetition,
                                                      # writes benchmarks/out/RESULTS.quick.md
    .venv/bin/python benchmarks/run_all.py --render-only  # RESULTS.md from benchmarks/out/*.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import OUT, PY, bench_env, log  # noqa: E402
from report import render  # noqa: E402


def plan(quick: bool) -> list[tuple[str, list[str], str]]:
    """(name, command, json file) of each benchmark to run."""
    steps = []
    if (HERE / "bench_collectives.py").is_file():
        extra = ["--iters", "50", "--warmup", "5"] if quick else []
        steps.append(("collectives", [str(HERE / "bench_collectives.py"), *extra],
                      "collectives.json"))
    steps.append(("engine", [str(HERE / "bench_engine.py"), *(["--quick"] if quick else [])],
                  "engine.json"))
    if not quick:
        steps.append(("memory", [str(HERE / "bench_memory.py")], "memory.json"))
        steps.append(("streaming", [str(HERE / "bench_streaming.py")], "streaming.json"))
    if os.environ.get("LLAMA_CPP") == "1":  # builds llama-cpp-python if missing (minutes)
        steps.append(("llama.cpp", [str(HERE / "bench_llamacpp.py"),
                                    *(["--reps", "1"] if quick else [])], "llamacpp.json"))
    return steps


def _keep_run_notes(extra: dict, args: argparse.Namespace) -> dict:
    """A full run saves its notes (timings, errors) beside the JSON; --render-only reuses
    them, so re-rendering RESULTS.md does not lose what the run said about itself."""
    saved = OUT / "run_notes.json"
    if args.render_only:
        if saved.is_file():
            return json.loads(saved.read_text())
        return extra
    if not args.quick:
        saved.write_text(json.dumps(extra, indent=2))
    return extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fast smoke run; RESULTS.md untouched")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite RESULTS.md from the JSON already in benchmarks/out")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    errors, notes = [], []
    steps = [] if args.render_only else plan(args.quick)
    for _, _, json_name in steps:  # never render a stale file from an earlier run
        (OUT / json_name).unlink(missing_ok=True)
    for name, cmd, _ in steps:
        log(f"=== {name}: {' '.join(Path(c).name for c in cmd)}")
        started = time.monotonic()
        rc = subprocess.call([PY, *cmd], env=bench_env(), cwd=HERE.parent)
        took = (time.monotonic() - started) / 60
        log(f"=== {name}: exit {rc} after {took:.1f} min")
        notes.append(f"{name} took {took:.1f} min")
        if rc != 0:
            errors.append(f"{name} exited with {rc} (see the `make bench` log)")
    if not args.quick:  # also on --render-only: the note is about bench_engine's settings
        notes.append(
            "The 1.1B random Llama runs 32 new tokens (not 64) so the whole run fits ~25 min; "
            "its decode ms/token is still (t(N) - t(1)) / (N - 1) over the same tokens for "
            "both engines.")
    extra = {"total_min": None if args.render_only else round((time.monotonic() - t0) / 60, 1),
             "errors": errors,
             "notes": notes, "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}
    extra = _keep_run_notes(extra, args)
    md = render(OUT, extra)
    target = OUT / "RESULTS.quick.md" if args.quick else HERE / "RESULTS.md"
    target.write_text(md)
    log(f"wrote {target}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
