"""The "API vs engine" section of RESULTS.md, from benchmarks/out/serve.json (bench_serve.py).

Issue 16's targets live here, so bench_serve.py prints the verdicts RESULTS.md renders.
"""

from __future__ import annotations

import statistics

from cells import code_of, fmt

TTFT_FACTOR = 1.1  # API time to first token <= TTFT_FACTOR x the engine's + TTFT_SLACK_MS
TTFT_SLACK_MS = 5.0
TPS_FACTOR = 0.95  # API streamed tokens/s >= TPS_FACTOR x the engine's
FEW_REPS = 3  # fewer repetitions than this are a smoke run (run_all.py --quick)


def ttft_limit(engine_ms: float | None) -> float | None:
    return None if engine_ms is None else TTFT_FACTOR * engine_ms + TTFT_SLACK_MS


def tps_limit(engine_tps: float | None) -> float | None:
    return None if engine_tps is None else TPS_FACTOR * engine_tps


def checks(d: dict) -> list[dict]:
    """Both targets: the medians against their limit, and how many repetitions (engine and
    API of one repetition ran back to back) were within on their own."""
    e, a = d["engine"], d["api"]
    pairs = list(zip(d["runs"]["engine"], d["runs"]["api"], strict=False))

    def within_ttft(en: dict, ap: dict) -> bool:
        return en["ttft_ms"] is not None and ap["ttft_ms"] is not None \
            and ap["ttft_ms"] <= ttft_limit(en["ttft_ms"])

    def within_tps(en: dict, ap: dict) -> bool:
        return bool(en["tokens_per_s"]) and ap["tokens_per_s"] is not None \
            and ap["tokens_per_s"] >= tps_limit(en["tokens_per_s"])

    out = []
    for key, limit, ok_rep, upper in (("ttft_ms", ttft_limit(e["ttft_ms"]), within_ttft, True),
                                      ("tokens_per_s", tps_limit(e["tokens_per_s"]), within_tps,
                                       False)):
        value = a[key]
        if value is None or limit is None:
            result = "not measured"
        else:
            result = "PASS" if (value <= limit if upper else value >= limit) else "MISS"
        out.append({"key": key, "api": value, "engine": e[key], "limit": limit,
                    "within": sum(ok_rep(en, ap) for en, ap in pairs), "reps": len(pairs),
                    "result": result})
    return out


def _smoke(d: dict) -> str:
    return (f" (smoke run: {d['reps']} repetition{'s' if d['reps'] != 1 else ''})"
            if d["reps"] < FEW_REPS else "")


def _ranks(d: dict) -> str:
    return f"{d['ranks']} rank{'s' if d['ranks'] != 1 else ''}"


def serve_targets(d: dict | None) -> list[str]:
    """Rows of the Targets table at the top of RESULTS.md."""
    if not d:
        return []
    ttft, tps = checks(d)
    ratio = (tps["api"] / tps["engine"]) if tps["api"] is not None and tps["engine"] else None
    paired = [ap["tokens_per_s"] / en["tokens_per_s"] for en, ap in
              zip(d["runs"]["engine"], d["runs"]["api"], strict=False)
              if en["tokens_per_s"] and ap["tokens_per_s"] is not None]
    smoke = _smoke(d)
    return [
        f"| default model, {_ranks(d)}, streamed through the API: time to first token, API "
        f"vs the engine as `tpi-chat generate` runs it{smoke} | <= {TTFT_FACTOR} x "
        f"{fmt(ttft['engine'])} + {TTFT_SLACK_MS:g} = {fmt(ttft['limit'])} ms | "
        f"{fmt(ttft['api'])} ms | {ttft['within']}/{ttft['reps']} repetitions within | "
        f"{ttft['result']} |",
        f"| default model, {_ranks(d)}, streamed through the API: tokens/s, API / engine"
        f"{smoke} | >= {TPS_FACTOR} | {fmt(ratio, 3)} | "
        f"{fmt(round(statistics.median(paired), 3) if paired else None, 3)} "
        f"({tps['within']}/{tps['reps']} within) | {tps['result']} |",
    ]


def _spread(xs: list[float | None]) -> str:
    """(max - min) / median over the repetitions, as the other sections' *spread*."""
    xs = [x for x in xs if x is not None]
    if len(xs) < 2 or not statistics.median(xs):
        return "-"
    return f"{(max(xs) - min(xs)) / statistics.median(xs):.2f}"


def serve_section(d: dict) -> list[str]:
    m = d.get("machine", {})
    runs = d["runs"]
    ttft, tps = checks(d)
    lines = [
        "## The API against the engine (benchmarks/bench_serve.py, issue 16)", "",
        f"Started {m.get('date', '?')}{code_of(m)}, load average then "
        f"{m.get('load_avg_at_start', '?')}, at end {d.get('load_avg_at_end', '?')} "
        f"({m.get('cores', '?')} cores). Default model (SmolLM2-135M-Instruct), "
        f"{_ranks(d)}, greedy, at most {d['new_tokens']} new tokens, {d['reps']} "
        f"repetitions{' (a smoke run)' if _smoke(d) else ''}; engine and API alternate "
        "within each repetition, each repetition with a system prompt of its own (the "
        "server's KV reuse cannot skip the prefill). Engine: the model opened in the "
        "benchmark's process as `tpi-chat generate` opens it, one warm-up reply, then a "
        f"fresh chat's reply on {d.get('engine_thread', 'a thread of its own')}; "
        "TTFT and decode tokens/s as `generate --json` reports them. API: one `tpi-chat "
        "serve` process, one warm-up reply, then the openai client streaming the same "
        "request; TTFT from sending the request to the first chunk with text, tokens/s = "
        "(completion tokens - 1) / (last text chunk - "
        "first text chunk).", "",
        "| target | API | engine | limit | repetitions within | result |",
        "|---|---|---|---|---|---|",
        f"| time to first token, ms | {fmt(ttft['api'])} | {fmt(ttft['engine'])} | <= "
        f"{TTFT_FACTOR} x engine + {TTFT_SLACK_MS:g} = {fmt(ttft['limit'])} | "
        f"{ttft['within']}/{ttft['reps']} | {ttft['result']} |",
        f"| streamed tokens/s | {fmt(tps['api'])} | {fmt(tps['engine'])} | >= {TPS_FACTOR} x "
        f"engine = {fmt(tps['limit'])} | {tps['within']}/{tps['reps']} | {tps['result']} |",
        "", "| repetition | engine TTFT ms | API TTFT ms | engine tokens/s | API tokens/s | "
        "tokens engine / API | load (1 min) |", "|---|---|---|---|---|---|---|"]
    loads = d.get("load_per_rep") or []
    for i, (en, ap) in enumerate(zip(runs["engine"], runs["api"], strict=False)):
        load = fmt(loads[i], 2) if i < len(loads) else "-"
        lines.append(f"| {i + 1} | {fmt(en['ttft_ms'])} | {fmt(ap['ttft_ms'])} | "
                     f"{fmt(en['tokens_per_s'])} | {fmt(ap['tokens_per_s'])} | "
                     f"{en['tokens']} / {ap['tokens']} | {load} |")
    lines.append(f"| median (spread) | {fmt(ttft['engine'])} "
                 f"({_spread([r['ttft_ms'] for r in runs['engine']])}) | {fmt(ttft['api'])} "
                 f"({_spread([r['ttft_ms'] for r in runs['api']])}) | {fmt(tps['engine'])} "
                 f"({_spread([r['tokens_per_s'] for r in runs['engine']])}) | "
                 f"{fmt(tps['api'])} ({_spread([r['tokens_per_s'] for r in runs['api']])}) "
                 "| | |")
    each = d.get("api_chunk_per_token")
    if each and tps["engine"]:
        lines += ["", f"`serve` streams text at most every 50 ms by default (a few tokens a "
                  f"chunk when they come faster; core/serve/text_batcher.py): "
                  f"{fmt(d.get('text_chunks'))} text chunks a reply here. A second server "
                  f"with `--stream-interval-ms 0` (every token its own chunk), in the same "
                  f"repetitions: {fmt(each['tokens_per_s'])} tokens/s, "
                  f"{each['tokens_per_s'] / tps['engine']:.2f}x the engine's, and "
                  f"{fmt(each['ttft_ms'])} ms to the first token: each chunk costs the "
                  "server's event loop and the openai client CPU taken from the decode on "
                  "the same cores."]
    cli = d.get("cli_fresh_process") or {}
    if runs.get("cli"):
        lines += ["", f"For reference, `tpi-chat generate --json` as fresh processes "
                  f"({len(runs['cli'])}, each a process's first reply, so cold): "
                  f"{fmt(cli.get('ttft_ms'))} ms to the first token, "
                  f"{fmt(cli.get('tokens_per_s'))} tokens/s (medians)."]
    return lines + [""]
