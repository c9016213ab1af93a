"""The "70B-shaped layer stack" section of RESULTS.md, from benchmarks/out/llama70b.json."""

from __future__ import annotations

from cells import code_of as _code
from cells import fmt


def _mb_list(xs: list[float]) -> str:
    """Rank 0 and the others (min-max): rank 0 alone holds the embedding and the head."""
    if not xs:
        return "-"
    rest = xs[1:]
    if not rest:
        return fmt(xs[0], 0)
    others = (fmt(min(rest), 0) if round(min(rest)) == round(max(rest))
              else f"{fmt(min(rest), 0)}-{fmt(max(rest), 0)}")
    return f"{fmt(xs[0], 0)} / {others}"


def llama70b_section(d: dict) -> list[str]:
    m, s, p = d["machine"], d["shape"], d["paper"]
    lo, hi = d["depths"]
    by = d["by_config"]
    gb80 = [x / 1024 for x in d["peak_rss_mb_per_process_80"]]
    lines = [
        f"## Llama 2-70B-shaped layers at {d['ranks']} ranks, q4 (benchmarks/bench_70b.py)", "",
        f"Started {m['date']}{_code(m)}, load average then {m['load_avg_at_start']}. Stacks of "
        f"{lo} and "
        f"{hi} layers of Llama 2-70B's shape (hidden {s['hidden']}, MLP {s['ffn']}, "
        f"{s['heads']} heads over {s['kv_heads']} KV heads; {d['layer_mb_q4']} MB a layer at "
        "Q4_1), synthetic Q4_1 GGUFs with random weights (the default model's 49k-token "
        "tokenizer, so the embedding and head, on rank 0, are 49152 x 8192 where Llama 2 "
        f"has 32000), split with `--dtype q4` and run by `tpi-chat generate --ranks "
        f"{d['ranks']} --dtype q4`: all {d['ranks']} processes on this {m['cores']}-core "
        f"machine, 1 thread each, {d['new_tokens']} greedy tokens; {d['reps']} repetitions, "
        "order rotated, medians. Peak RSS is each process's VmHWM (psutil, every 100 ms), "
        "rank 0 / the other ranks.", "",
        "| configuration | decode ms/token | spread | TTFT ms | peak RSS MB per process | "
        "(as reported) | sum MB |", "|---|---|---|---|---|---|---|",
    ]
    for label, r in by.items():
        lines.append(f"| {label} | {fmt(r['decode_ms_per_token'])} | "
                     f"{fmt(r['decode_spread'], 2)} | {fmt(r['ttft_ms'], 0)} | "
                     f"{_mb_list(r['peak_rss_mb_per_process'])} | "
                     f"{_mb_list(r['cli_peak_rss_mb'])} | {fmt(r['sum_peak_rss_mb'], 0)} |")
    w = d.get("window")
    lines += [
        "", f"Extrapolated to Llama 2-70B's {s['layers']} layers (slopes between {lo} and {hi} "
        "layers, so the embedding, head and start-up cancel out), beside the TPI-LLM paper's "
        f"Llama 2-70B on {p['devices']} devices ({p['source']}):", "",
        "| | ours, q4, window all | "
        + (f"ours, q4, window {w} | " if w else "") + f"paper, {p['weights']}, sliding window |",
        "|---|---|" + ("---|" if w else "") + "---|",
        f"| ms per layer per token ({d['ranks']} ranks on {m['cores']} cores) | "
        f"{fmt(d['ms_per_layer_per_token'], 1)} (all layers / {hi}: "
        f"{fmt(d['ms_per_layer_naive'], 1)}) | "
        + (f"{fmt(d['window_ms_per_layer_naive'], 1)} (all layers / {hi}) | " if w else "")
        + "not quoted here |",
        f"| decode ms/token at {s['layers']} layers | {fmt(d['decode_ms_per_token_80'], 0)} | "
        + ("- | " if w else "") + "not quoted here |",
        f"| MB per layer per process (slope) | "
        f"{_mb_list(d['rss_mb_per_layer_per_process'])} | " + ("- | " if w else "")
        + "- |",
        f"| peak RSS per process at {s['layers']} layers | "
        f"{_mb_list(d['peak_rss_mb_per_process_80'])} MB (max {max(gb80):.1f} GB) | "
        + (f"{_mb_list(d['window_peak_rss_mb_per_process_80'])} MB (as measured at {hi} "
           "layers) | " if w else "")
        + f"{p['peak_memory_gb_per_device']} GB per device |",
        "",
        "Reading it: the ms are for all 8 ranks' shares of a layer computed by 8 processes "
        f"time-sharing {m['cores']} cores and one memory bus, plus 2 allreduces a layer over "
        "loopback; on 8 devices each rank would have its own cores and bus, so the compute "
        f"would shrink (up to 8 / {m['cores']} times with cores like these) while a real "
        "network adds its link latency to every allreduce. The paper's latency figures for Llama "
        "2-70B are not quoted here (its text was not available to check them); its memory "
        "figure is per device for fp32 weights streamed by its sliding window, the "
        f"comparable column is window {w or '2'}.",
        "",
    ]
    return lines
