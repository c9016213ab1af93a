"""Render benchmarks/out/*.json as markdown: machine, targets with PASS/MISS, tables, notes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cells import fmt, verdict
from kept_sections import Previous, merge_items
from llama70b_report import llama70b_section
from llamacpp_report import llamacpp_section, perplexity_section, ratio_verdict
from planner_report import planner_section
from serve_report import serve_section, serve_targets
from speculative_report import speculative_section, speculative_targets
from streaming_report import streaming_section

ENGINE_TARGETS = (
    # (model, config, key, limit, what)
    ("default", "ours r1 wall", "decode_vs_hf", 0.8,
     "default model, 1 rank, all resident: decode ms/token vs transformers"),
    ("default", "ours r2 wall", "decode_vs_1rank", 1.5,
     "default model, 2 ranks vs 1 rank (window all): decode ms/token"),
)

# The steps whose JSON the Machine section is taken from, in render's order.
MACHINE_FROM = ("engine", "memory", "70b", "perplexity", "llama.cpp", "serve")


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def machine_section(m: dict, extra: dict) -> list[str]:
    return [
        "## Machine", "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram_gib']} GiB; {m['os']}",
        f"- Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}",
        f"- Code: {m['code']}" if m.get("code") else "",
        f"- Date: {m['date']}; load average at start {m['load_avg_at_start']}"
        + (f", at end {extra['load_avg_at_end']}" if extra.get("load_avg_at_end") else ""),
        f"- Whole run: {fmt(extra.get('total_min'))} min" if extra.get("total_min") else "",
        "",
    ]


def same_file_targets(llama: list[dict]) -> list[str]:
    """Rows of the Targets table for ours vs llama.cpp on the same GGUF files."""
    lines = []
    for d in llama:
        for r in d.get("ratios", []):
            if r["limit"] is None or not r["ours"].startswith("ours auto"):
                continue
            result = ratio_verdict(r, d.get("runs"))
            lines.append(f"| {r['ours']} / {r['theirs']}, same file, {d['threads']} threads: "
                         f"decode ms/token | <= {r['limit']} | {fmt(r['ratio'], 3)} | "
                         f"{fmt(r.get('paired'), 3)} | {result} |")
    return lines


def perplexity_targets(ppl: dict | None) -> list[str]:
    """Rows of the Targets table for perplexity, ours vs llama.cpp on the same files."""
    return [f"| perplexity, ours / llama.cpp - 1 on the {q} file | "
            f"<= {ppl['limit'] * 100:g}% | {r['rel_diff'] * 100:+.2f}% | - | "
            f"{'PASS' if r['pass'] else 'MISS'} |"
            for q, r in (ppl or {}).get("by_variant", {}).items()]


def engine_targets(engine: dict | None) -> list[str]:
    lines = []
    for model, cfg, key, limit, what in ENGINE_TARGETS:
        row = ((engine or {}).get("models", {}).get(model, {}).get("summary", {}).get(cfg, {}))
        paired = row.get("decode_vs_hf_paired") if key == "decode_vs_hf" else None
        lines.append(f"| {what} | <= {limit} | {fmt(row.get(key), 3)} | {fmt(paired, 3)} | "
                     f"{verdict(row.get(key), limit)} |")
    return lines


def memory_targets(memory: dict | None) -> list[str]:
    if not memory:
        return ["| 64-layer Llama, window 2 / all peak RSS | <= 0.4 | - | - | not measured |"]
    s = memory["summary"]
    ok = s["ratio"] <= s["target"] and s["same_tokens"]
    return [f"| 64-layer Llama, 2 ranks: peak RSS of all processes, window 2 / window all, "
            f"same tokens ({'yes' if s['same_tokens'] else 'NO'}) | <= {s['target']} | "
            f"{fmt(s['ratio'], 3)} | psutil: {fmt(s['ratio_psutil'], 3)} | "
            f"{'PASS' if ok else 'MISS'} |"]


def targets_section(rows: list[str]) -> list[str]:
    return ["## Targets", "", "| target | limit | measured (ratio of medians) | paired "
            "median | result |", "|---|---|---|---|---|", *rows, ""]


def engine_section(name: str, m: dict) -> list[str]:
    lines = [
        f"### {name} ({m['model_gb']} GB of weights on disk)", "",
        f"{m['reps']} repetitions, {m['new_tokens']} new tokens, greedy, "
        f"{'raw prompt' if m['raw'] else 'chat template'}, "
        f"{m['summary']['transformers']['tokens']} tokens made by transformers. "
        f"Pre-split seconds per rank count: {m['split_s']}.", "",
        "| engine | TTFT ms | decode ms/tok | spread | decode vs HF (paired) | vs 1 rank | "
        "peak RSS per rank MB | (as reported) | sum MB | same tokens as HF | disk read MB | "
        "major faults |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in m["summary"].items():
        vs = (f"{fmt(r.get('decode_vs_hf'), 2)} ({fmt(r.get('decode_vs_hf_paired'), 2)})"
              if label != "transformers" else "1")
        rss = " / ".join(fmt(x, 0) for x in r["peak_rss_mb_sampled"])
        cli = " / ".join(fmt(x, 0) for x in r["peak_rss_mb"])
        ttft = fmt(r["ttft_ms"], 0)
        if r.get("ttft_warm_ms") is not None:
            ttft += f" (warm {fmt(r['ttft_warm_ms'], 0)})"
        lines.append(
            f"| {label} | {ttft} | {fmt(r['decode_ms_per_token'], 1)} | "
            f"{fmt(r['decode_spread'], 2)} | {vs} | {fmt(r.get('decode_vs_1rank'), 2)} | {rss} | "
            f"{cli} | "
            f"{fmt(r['sum_peak_rss_mb'], 0)} | {'yes' if r['match_hf'] else 'NO'} | "
            f"{fmt(r['ru_read_mb'], 0)} | {fmt(r['ru_majflt'], 0)} |")
    return lines + [""]


def memory_section(mem: dict) -> list[str]:
    s = mem["summary"]
    sp = mem["split"]
    lines = [
        f"## Memory: {mem['model']} ({mem['model_gb']} GB fp32), {mem['ranks']} ranks", "",
        _when(mem), "",
        f"{mem['reps']} repetitions per window, {mem['new_tokens']} greedy tokens, windows "
        f"alternating. Same tokens in every run: {'yes' if s['same_tokens'] else 'NO'}. "
        f"Splitting (done before, not counted; measured fresh into a throw-away cache): "
        f"{sp['wall_s']} s, peak RSS {sp['peak_tree_rss_mb']} MB, "
        f"disk read {sp['ru_read_mb']} MB.", "",
        "| window | sum of rank peaks MB (as reported) | per rank MB (as reported) | "
        "psutil sum of VmHWM peaks MB | "
        "psutil peak of tree MB | TTFT ms | decode ms/tok | disk read MB | major faults |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w, r in s["by_window"].items():
        lines.append(
            f"| {w} | {fmt(r['sum_rank_peak_rss_mb'], 0)} | "
            f"{' / '.join(fmt(x, 0) for x in r['peak_rss_mb'])} | "
            f"{fmt(r['psutil_sum_peak_rss_mb'], 0)} | {fmt(r['psutil_peak_tree_rss_mb'], 0)} | "
            f"{fmt(r['ttft_ms'], 0)} | {fmt(r['decode_ms_per_token'], 1)} | "
            f"{fmt(r['ru_read_mb'], 0)} | {fmt(r['ru_majflt'], 0)} |")
    lines += ["", f"Ratio (sum of rank peaks): **{s['ratio']}**; from psutil sampling: "
              f"{s['ratio_psutil']}; target <= {s['target']}.", ""]
    return lines


def _when(data: dict) -> str:
    m = data.get("machine", {})
    return f"Started {m.get('date', '?')}, load average then {m.get('load_avg_at_start', '?')}."


def collectives_section(col: dict) -> list[str]:
    reps = f" x {col['repeats']} repeats (median of the medians)" if col.get("repeats") else ""
    return ["## Collectives (benchmarks/bench_collectives.py)", "",
            f"{col.get('unit', '')}, {col.get('iters', '?')} iterations{reps}.", "",
            col.get("table", "(no table)"), ""]


NOTES = [
    "## How to read this", "",
    "- Every number is measured in this one run, side by side: for each repetition "
    "transformers runs first, then our configurations in an order rotated per repetition. "
    "Tables show medians; *spread* is (max - min) / median of decode ms/token over the "
    "repetitions; *paired* ratios compare each of our runs with the transformers run of the "
    "same repetition.",
    "- transformers: fp32 `generate`, greedy, 2 torch threads, its own process. TTFT is the "
    "first `generate(max_new_tokens=1)` of the process (cold, like our CLI's first step); "
    "decode ms/token = (t(N) - t(1)) / (N - 1), warm.",
    "- Ours: `tpi-chat generate --json` as a subprocess (rank 0 plus ranks-1 local worker "
    "processes), torch threads = cores / ranks per rank; models pre-split before timing.",
    "- *Peak RSS per rank* is each process's kernel high-water mark (VmHWM), read with its "
    "RSS every 100 ms by psutil; *sum MB* adds those over all processes of the run. *(as "
    "reported)* is the CLI's own `peak_rss_mb` (ru_maxrss). On Linux ru_maxrss survives "
    "execve and Python spawns children with vfork, so a worker's ru_maxrss starts at its "
    "parent's (rank 0's) peak at spawn time: it over-states workers. Disk reads and major "
    "faults are getrusage(RUSAGE_CHILDREN) deltas over each run: every process counts.",
    "- The machine is shared and noisy (other jobs, 2 cores); it also pages out memory and "
    "page cache left idle for about 30 s, so streamed (windowed) runs may read from disk "
    "(see disk read / major faults) while resident runs mostly do not.",
    "- 2 ranks vs 1 rank on this one 2-core machine: both ranks stream weights through the "
    "same memory bus (~34 GB/s in all), so each gets about half of it, and rank 0 also "
    "reads the lm_head (113 MB fp32) while rank 1 waits. Once the compiled kernels made one "
    "rank read at the bus's speed, local TP can only add its allreduces: the ratio went from "
    "1.15 (torch kernels, 1 rank at 38 ms) to ~1.5 with 2 ranks faster than before (40 -> "
    "34 ms). TP pays across devices, each with its own memory bus.",
    "- Tests never assert on these times; rerun `make bench` on a quiet machine for CI "
    "numbers.",
]


def render(out_dir: Path, extra: dict, previous: Previous | None = None) -> str:
    """The whole RESULTS.md from the JSON files present in `out_dir`; a step whose JSON is
    missing keeps its part of `previous` (the RESULTS.md being replaced) as it was."""
    engine = _load(out_dir / "engine.json")
    memory = _load(out_dir / "memory.json")
    col = _load(out_dir / "collectives.json")
    streaming = _load(out_dir / "streaming.json")
    llama = [d for d in (_load(p) for p in sorted(out_dir.glob("llamacpp*.json"))) if d]
    ppl = _load(out_dir / "perplexity.json")
    l70 = _load(out_dir / "llama70b.json")
    spec = _load(out_dir / "speculative.json")
    planner = _load(out_dir / "planner.json")
    serve = _load(out_dir / "serve.json")
    data = {"collectives": col, "engine": engine, "memory": memory, "streaming": streaming,
            "70b": l70, "speculative": spec, "serve": serve, "planner": planner,
            "llama.cpp": llama, "perplexity": ppl}
    prev = previous or Previous()
    kept = {step for step, d in data.items() if not d}

    def part(step: str, build: Callable[[Any], list[str]]) -> list[str]:
        if data[step]:
            return build(data[step])
        return prev.sections.get(step, [])

    def rows(step: str, fresh: list[str]) -> list[str]:
        return prev.rows[step] if step in kept and prev.rows.get(step) else fresh

    lines = ["# Benchmark results", "",
             "Written by `make bench` (benchmarks/run_all.py); raw numbers in "
             "benchmarks/out/*.json.", ""]
    # The machine line describes the first of these steps' runs; a kept one keeps its line.
    source = next((s for s in MACHINE_FROM if data[s] or s in prev.sections), None)
    mach = next((d["machine"] for d in (engine, memory, l70, ppl, *llama, serve)
                 if d and d.get("machine")), None)
    if source in kept and prev.machine:
        lines += prev.machine
    elif mach:
        lines += machine_section(mach, extra)
    lines += targets_section(
        rows("engine", engine_targets(engine)) + rows("memory", memory_targets(memory))
        + rows("llama.cpp", same_file_targets(llama)) + rows("perplexity", perplexity_targets(ppl))
        + rows("speculative", speculative_targets(spec)) + rows("serve", serve_targets(serve)))
    notes = merge_items(prev.notes, extra.get("notes") or [], kept)
    if notes:
        lines += ["## Notes on this run", "", *[f"- {n}" for n in notes], ""]
    lines += part("engine", lambda e: ["## Engine: ours vs transformers", "", _when(e), "",
                                       *(x for name, m in e["models"].items()
                                         for x in engine_section(name, m))])
    lines += part("memory", memory_section)
    lines += part("streaming", streaming_section)
    lines += part("speculative", speculative_section)
    lines += part("serve", serve_section)
    lines += part("collectives", collectives_section)
    lines += part("70b", llama70b_section)
    lines += part("planner", planner_section)
    lines += part("llama.cpp", lambda ds: [x for d in ds for x in llamacpp_section(d)])
    lines += part("perplexity", perplexity_section)
    errors = merge_items(prev.errors, extra.get("errors") or [], kept)
    if errors:
        lines += ["## Errors", "", *[f"- {e}" for e in errors], ""]
    lines += NOTES
    return "\n".join(x for x in lines if x is not None) + "\n"
