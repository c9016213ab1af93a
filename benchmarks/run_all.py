"""Run every benchmark in sequence and write benchmarks/RESULTS.md (`make bench`).

  1. benchmarks/bench_collectives.py  (if present; another engineer's allreduce benchmark)
  2. benchmarks/bench_engine.py       ours vs transformers, default model and a random 1.1B
  3. benchmarks/bench_memory.py       window 2 vs all on a random 64-layer Llama
     benchmarks/bench_streaming.py    window 2 vs all decode speed: warm, cold, link latency
     benchmarks/bench_70b.py          Llama 2-70B-shaped layers at 8 ranks, q4
     benchmarks/bench_speculative.py  speculative vs plain decoding at 0, 2, 5 ms per send
     benchmarks/bench_serve.py        the API (`tpi-chat serve`, streamed) vs the engine
     benchmarks/bench_planner.py      the planner on an emulated home network (needs root)
  4. benchmarks/bench_llamacpp.py     only with LLAMA_CPP=1: ours vs llama.cpp vs transformers
     benchmarks/bench_perplexity.py   only with LLAMA_CPP=1: perplexity on the same GGUFs

Each is its own subprocess writing benchmarks/out/<name>.json; a failing benchmark is
reported in RESULTS.md and the others still run. A step whose JSON is not in benchmarks/out
(and that did not run now) keeps its section, Targets rows and notes from the RESULTS.md
being replaced, verbatim (benchmarks/kept_sections.py).

    .venv/bin/python benchmarks/run_all.py            # full run, rewrites RESULTS.md (~21 min
                                                      # without LLAMA_CPP=1, ~40 with it)
    .venv/bin/python benchmarks/run_all.py --quick    # smoke run: default model, 1 repetition,
                                                      # writes benchmarks/out/RESULTS.quick.md
    .venv/bin/python benchmarks/run_all.py --only llama.cpp,perplexity,70b
                                                      # these steps only; RESULTS.md re-rendered
                                                      # with the other steps' last JSON (or
                                                      # their part of the current RESULTS.md)
    .venv/bin/python benchmarks/run_all.py --render-only  # RESULTS.md from benchmarks/out/*.json

`make bench BENCH_ARGS="--only llama.cpp,perplexity"` passes arguments through.
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
from kept_sections import Previous, parse  # noqa: E402
from report import render  # noqa: E402


def plan(quick: bool, llama: bool | None = None) -> list[tuple[str, list[str], str]]:
    """(name, command, json file) of each benchmark to run; `llama` (default: LLAMA_CPP=1)
    adds the steps that need llama-cpp-python."""
    if llama is None:
        llama = os.environ.get("LLAMA_CPP") == "1"
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
        steps.append(("70b", [str(HERE / "bench_70b.py")], "llama70b.json"))
    steps.append(("speculative", [str(HERE / "bench_speculative.py"),
                                  *(["--reps", "1", "--tokens", "24"] if quick else [])],
                  "speculative.json"))
    # --cli-reps: fresh `generate` processes, shown beside the targets for reference
    steps.append(("serve", [str(HERE / "bench_serve.py"),
                            *(["--reps", "2", "--new-tokens", "24"] if quick
                              else ["--cli-reps", "3"])], "serve.json"))
    if not quick:
        steps.append(("planner", [str(HERE / "bench_planner.py")], "planner.json"))
    if llama:  # builds llama-cpp-python if missing (minutes)
        steps.append(("llama.cpp", [str(HERE / "bench_llamacpp.py"),
                                    *(["--reps", "1"] if quick else [])], "llamacpp.json"))
        steps.append(("perplexity", [str(HERE / "bench_perplexity.py"),
                                     *(["--windows", "2"] if quick else [])], "perplexity.json"))
    return steps


def select(only: str, quick: bool) -> list[tuple[str, list[str], str]]:
    """The steps named in --only, in plan order (llama.cpp ones whether LLAMA_CPP=1 or not)."""
    names = {n.strip() for n in only.split(",") if n.strip()}
    steps = plan(quick, llama=True)
    unknown = names - {name for name, _, _ in steps}
    if unknown:
        raise SystemExit(f"--only: no step {', '.join(sorted(unknown))} "
                         f"{'in --quick ' if quick else ''}(steps: "
                         f"{', '.join(name for name, _, _ in steps)})")
    return [s for s in steps if s[0] in names]


def _keep_run_notes(extra: dict, args: argparse.Namespace, ran: set[str]) -> dict:
    """A full run saves its notes (timings, errors) beside the JSON; --render-only reuses
    them, so re-rendering RESULTS.md does not lose what the run said about itself, and
    --only replaces the notes of the steps it ran and keeps the others'."""
    saved = OUT / "run_notes.json"
    prev = json.loads(saved.read_text()) if saved.is_file() else None
    if args.render_only:
        return prev or extra
    if args.only and prev:
        def other(line: str) -> bool:
            return line.split(" ", 1)[0] not in ran

        minutes = extra["total_min"]
        extra = {**prev, "errors": [e for e in prev["errors"] if other(e)] + extra["errors"],
                 "notes": [n for n in prev["notes"] if other(n)] + [
                     n for n in extra["notes"] if not other(n)],
                 "load_avg_at_end": extra["load_avg_at_end"]}
        extra["notes"].append(f"{', '.join(sorted(ran))} re-run on their own "
                              f"(run_all.py --only, {minutes} min)")
    if not args.quick:
        saved.write_text(json.dumps(extra, indent=2))
    return extra


def hand_run_sections(path: Path) -> str:
    """The sections of the RESULTS.md being replaced whose title says "run by hand": no step
    here measures them, so a re-render carries them over as they are."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    kept, keep = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            keep = "run by hand" in line
        if keep:
            kept.append(line)
    return "\n".join(kept).strip() + "\n" if kept else ""


def previous_results(path: Path, ran: set[str]) -> Previous | None:
    """The step parts of the RESULTS.md being replaced, less those of the steps run now."""
    try:
        return parse(path.read_text(), exclude=ran)
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fast smoke run; RESULTS.md untouched")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite RESULTS.md from the JSON already in benchmarks/out")
    ap.add_argument("--only", default=None, metavar="STEP,...",
                    help="run these steps only (collectives, engine, memory, streaming, 70b, "
                         "speculative, serve, planner, llama.cpp, perplexity) and re-render "
                         "RESULTS.md with the others' last JSON")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    errors, notes = [], []
    steps = ([] if args.render_only else select(args.only, args.quick) if args.only
             else plan(args.quick))
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
    extra = _keep_run_notes(extra, args, {name for name, _, _ in steps})
    # A step with no JSON in OUT keeps its part of the RESULTS.md being replaced, unless it
    # ran now (then its failure is the news); a smoke run starts from nothing.
    previous = None if args.quick else previous_results(HERE / "RESULTS.md",
                                                        {name for name, _, _ in steps})
    md = render(OUT, extra, previous)
    target = OUT / "RESULTS.quick.md" if args.quick else HERE / "RESULTS.md"
    by_hand = hand_run_sections(HERE / "RESULTS.md")
    target.write_text(md + ("\n" + by_hand if by_hand else ""))
    log(f"wrote {target}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
