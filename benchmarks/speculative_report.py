"""RESULTS.md section of benchmarks/bench_speculative.py (speculative.json)."""

from __future__ import annotations

import statistics


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def paired_ratio(delay: dict) -> float | None:
    """Median over repetitions of speculative / plain ms/token, each pair run back to back."""
    runs = delay["runs"]
    pairs = [s["ms_per_token"] / p["ms_per_token"]
             for p, s in zip(runs["plain"], runs["speculative"], strict=False)
             if p["ms_per_token"]]
    return round(statistics.median(pairs), 3) if pairs else None


def speculative_targets(d: dict | None) -> list[str]:
    """Rows of the Targets table: one per link latency."""
    rows = []
    for delay in (d or {}).get("delays", []):
        x = delay["summary"]
        rows.append(
            f"| default model, 2 ranks, {x['delay_ms']:g} ms per send, greedy: speculative / "
            f"plain decode ms/token, same tokens ({'yes' if x['identical'] else 'NO'}) | "
            f"<= {x['max_ratio']} | {x['ratio']} | {paired_ratio(delay)} | "
            f"{'PASS' if x['pass'] else 'MISS'} |")
    return rows


def speculative_section(d: dict) -> list[str]:
    m = d.get("machine", {})
    lines = ["## Speculative decoding against link latency (issue 14)", "",
             f"Default model, {d['ranks']} ranks on this machine, greedy, {d['tokens']} new "
             f"tokens, {d['reps']} repetitions ({d.get('reps_at_0_ms', d['reps'])} at 0 ms) of "
             "plain and speculative replies alternated in "
             "one process per latency (`--speculate auto --draft self`: the target's own Q4_1 "
             "weights on rank 0's thread). Measured on "
             f"{m.get('code', '?')}, {m.get('date', '?')}.", "",
             "| ms added per send | plain ms/token | speculative ms/token | ratio | target "
             "| tokens identical | acceptance | k median / max | kept per step | draft ms "
             "| load (1 min) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in (r["summary"] for r in d["delays"]):
        load = x.get("load") or []
        acc = "-" if x["acceptance"] is None else f"{x['acceptance']:.0%}"
        lines.append(
            f"| {x['delay_ms']:g} | {_ms(x['plain_ms'])} | {_ms(x['speculative_ms'])} | "
            f"{x['ratio']} | <= {x['max_ratio']} | {'yes' if x['identical'] else 'NO'} | "
            f"{acc} | "
            f"{x['k_median']:g} / {x['k_max']} | {x['accepted_per_step'] or '-'} | "
            f"{_ms(x['draft_ms'])} | "
            f"{min(load, default=0):.1f}-{max(load, default=0):.1f} | "
            f"{'PASS' if x['pass'] else 'MISS'} |")
    lines += ["", "k is chosen per step by core/engine/spec_control.py from the measured cost "
              "of a target step (fitted as base + per-token x positions), the draft's step "
              "time and the acceptance rate; where speculation cannot pay (a fast link on an "
              "idle machine) no step drafts and the ratio is noise around 1. Load is the "
              "1-minute load average at each reply (2 cores shared with other work).", ""]
    return lines
