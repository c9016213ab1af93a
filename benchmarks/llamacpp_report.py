"""The "ours vs llama.cpp" sections of RESULTS.md, from benchmarks/out/llamacpp.json
(speed) and benchmarks/out/perplexity.json (perplexity on the same files)."""

from __future__ import annotations

from cells import code_of as _code
from cells import fmt

NOISY = 0.5  # (max - min) / median over the repetitions above which a verdict is not given
MEASURES = {"decode_ms_per_token": "decode ms/token", "ttft_ms": "TTFT chat prompt",
            "ttft_512_ms": "TTFT 512-token prompt"}


FIRST16_NOTE = (
    "*First 16 tokens* counts positions among the first 16 where the token equals ours fp32 "
    "(after one difference the texts drift apart). transformers runs with `min_new_tokens`, "
    "which masks EOS: ours and llama.cpp emit EOS after \"The capital of France is Paris.\" "
    "(token 8) and go on, transformers picks the next-best token there, so 7/16 is agreement "
    "up to EOS. The default model's first token is a near-tie (\"The\" vs \"L\", 25.33 vs "
    "25.24 logits), so a quantised model (bf16, Q8_0) that flips it scores 0/16; "
    "tests/core/engine/test_weight_dtypes.py measures agreement over several prompts.")


KERNELS_NOTE = (
    "*Ours* decodes with the compiled kernels of core/kernels (built with this machine's C "
    "compiler on first use): a matvec per weight dtype that streams weights at the memory's "
    "speed, and RMSNorm, SiLU-gate and one-position attention fused, so a layer is a few "
    "calls instead of ~60 aten ops. Prefill (TTFT) runs torch's GEMMs. `TPI_CHAT_KERNELS=0` "
    "runs torch's kernels alone (the path of a machine without a compiler).")


def ratio_verdict(r: dict, runs: dict | None = None) -> str:
    """PASS/MISS of one ratio row; over the noise limit no verdict, unless the ratio of every
    repetition (`runs`: the JSON's runs per label) falls on the same side of the limit."""
    if r["limit"] is None:
        return "-"
    if r["ratio"] is None:
        return "not measured"
    if (r.get("worst_spread") or 0) > NOISY:
        pairs = [a[r["measure"]] / b[r["measure"]] for a, b in
                 zip((runs or {}).get(r["ours"], []), (runs or {}).get(r["theirs"], []),
                     strict=False) if b.get(r["measure"])]
        noisy = f"noisy (spread {r['worst_spread']:.2f})"
        if pairs and all(x > r["limit"] for x in pairs):
            return f"MISS: {noisy}, but every repetition's ratio is above"
        if pairs and all(x <= r["limit"] for x in pairs):
            return f"PASS: {noisy}, but every repetition's ratio is within"
        return noisy
    return "PASS" if r["ratio"] <= r["limit"] else "MISS"


def _files(d: dict) -> str:
    types = d.get("gguf_types", {})

    def one(q: str, mb: float) -> str:
        mix = types.get(q)
        if not mix or len(mix) < 2:
            return f"{q} {mb} MB"
        return f"{q} {mb} MB ({', '.join(f'{n} {t}' for t, n in mix.items())} matrices)"

    return ", ".join(one(q, mb) for q, mb in d["gguf_mb"].items())


def _conversion(c) -> str:
    """What our split made of one file: its types' fates and the error it reported."""
    if isinstance(c, str):  # JSON of an older run: the split's own words
        return c
    fates = ", ".join(f"{t} {fate}" for t, fate in c["formats"].items())
    said = "; ".join(s.replace("converted ", "") for s in c.get("split_said", []))
    return fates + (f" (the split measured: {said})" if said else "")


def llamacpp_section(d: dict) -> list[str]:
    m = d["machine"]
    built = f"; llama-cpp-python built in {d['build_s']} s" if d.get("build_s") else ""
    conv = d.get("ours_converted") or {}
    lines = [
        f"## Ours vs llama.cpp, {d['threads']} thread(s) (benchmarks/bench_llamacpp.py, "
        "`LLAMA_CPP=1 make bench`)", "",
        f"Started {m['date']}{_code(m)}, load average then {m['load_avg_at_start']}, at end "
        f"{d['load_avg_at_end']}; {m['cpu']}, {m['cores']} cores{built}. "
        f"llama-cpp-python {d['llama_cpp_version']}; default model (SmolLM2-135M-Instruct) "
        f"as GGUFs re-encoded from the shipped Q4_1: {_files(d)}. "
        "Q4_K_M is llama.cpp's own quantizer's output; SmolLM2's rows of 576 weights are not "
        "a multiple of 256, so llama.cpp itself falls back to Q5_0/Q8_0 for most matrices. "
        "*ours auto X* runs file X with `--dtype auto` (its own quantization)"
        + (": " + "; ".join(f"{q}: {_conversion(c)}" for q, c in conv.items()) if conv else "")
        + f". {d['reps']} repetitions, each configuration a fresh process, order rotated; "
        f"medians. {d['new_tokens']} greedy tokens (EOS ignored), {d['prompt_tokens']}-token "
        f"chat prompt, {d['threads']} threads everywhere, ours at 1 rank, all resident. "
        "*Paired* is the median over repetitions of the ratio within one repetition. "
        f"A target whose runs spread more than {NOISY} (max - min over median) on either "
        "side gets no verdict, unless the paired ratio of every repetition falls on the same "
        "side of the limit: llama.cpp's threads spin-wait at barriers, so a busy core costs "
        "it far more than it costs us.", "",
        "| target | ratio of medians | paired | limit | result |", "|---|---|---|---|---|",
    ]
    for r in d["ratios"]:
        lines.append(f"| {r['ours']} / {r['theirs']}, {MEASURES[r['measure']]} | "
                     f"{fmt(r['ratio'], 2)} | {fmt(r.get('paired'), 2)} | "
                     f"{'-' if r['limit'] is None else r['limit']} | "
                     f"{ratio_verdict(r, d.get('runs'))} |")
    lines += ["", "| engine | decode ms/token | spread | TTFT ms | spread | TTFT-512 ms | "
              "spread | first 16 tokens as ours fp32 |", "|---|---|---|---|---|---|---|---|"]
    for label, s in d["by_config"].items():
        lines.append(f"| {label} | {fmt(s['decode_ms_per_token'])} | {fmt(s['decode_spread'], 2)} "
                     f"| {fmt(s['ttft_ms'], 0)} | {fmt(s.get('ttft_spread'), 2)} | "
                     f"{fmt(s['ttft_512_ms'], 0)} | {fmt(s.get('ttft_512_spread'), 2)} | "
                     f"{s['same_first16_as_ours_fp32']}/16 |")
    lines += ["", FIRST16_NOTE, "", KERNELS_NOTE]
    if d.get("cmake_args"):
        lines += ["", "A fresh install builds llama-cpp-python with "
                  f"CMAKE_ARGS=`{d['cmake_args']}` (GGML_NATIVE off and AMX off: a native "
                  "build emits AMX tile instructions that die with SIGILL on VMs that do not "
                  "grant the AMX state)."]
    return lines + [""]


def perplexity_section(d: dict) -> list[str]:
    m = d["machine"]
    cap = d.get("cap") or {}
    what = (f"its first {cap['windows']} windows of {d['context']} tokens ({cap['tokens']} "
            f"tokens of {cap['full_tokens']}, {cap['full_windows']} windows in all)"
            if cap.get("capped") else f"all its windows of {d['context']} tokens")
    lines = [
        "## Perplexity: ours vs llama.cpp on the same files (benchmarks/bench_perplexity.py)", "",
        f"Started {m['date']}{_code(m)}, load average then {m['load_avg_at_start']}, at end "
        f"{d['load_avg_at_end']}. Text: benchmarks/data/{d['text']}, {what}; the same text "
        "file and token windows for both engines. Ours: `tpi-chat perplexity --context "
        f"{d['context']} --json` on the GGUF (`--dtype auto`, 1 rank, {d['threads']} threads). "
        "llama.cpp: llama-cpp-python on the same file (logits_all, each window evaluated "
        "from a reset state and a cleared KV cache), its logits scored by our "
        "core/engine/perplexity.py (window_nll: positions C/2 .. C-2, float64 log-softmax; "
        "no BOS: SmolLM2 does not add one, and llama.cpp's add_bos agrees); *same tokens* "
        "checks llama.cpp's own tokenization of the text against ours. Perplexity is "
        f"deterministic, so one run each. Target: |ours / llama.cpp - 1| <= "
        f"{d['limit'] * 100:g}%.", "",
        "| file | windows (tokens scored) | ours | llama.cpp | ours / llama.cpp - 1 | limit | "
        "result | ours vs F32 | llama.cpp vs F32 | same tokens | s ours / llama.cpp |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for q, r in d["by_variant"].items():
        lines.append(
            f"| {q} | {r['windows']} ({r['tokens']}) | {r['ours']:.4f} +/- {r['ours_error']:.3f} "
            f"| {r['llama_cpp']:.4f} +/- {r['llama_cpp_error']:.3f} | {r['rel_diff'] * 100:+.2f}% "
            f"| {d['limit'] * 100:g}% | {'PASS' if r['pass'] else 'MISS'} | "
            f"{_pct(r['ours_vs_f32'])} | {_pct(r['llama_cpp_vs_f32'])} | "
            f"{'yes' if r['same_tokens'] else 'NO'} | {r['ours_s']:.0f} / {r['llama_cpp_s']:.0f} |")
    return lines + ["", PERPLEXITY_NOTE, ""]


PERPLEXITY_NOTE = (
    "*+/-* is llama.cpp's error estimate (standard error of the mean NLL times the "
    "perplexity); it measures the text's sampling noise, which both engines share, not the "
    "difference between them. *vs F32* is each engine's perplexity on the file over its own "
    "perplexity on the F32 file: what the quantization costs in each engine. llama.cpp "
    "quantizes the activations to 8 bits (Q8_0 / Q8_1 / Q8_K blocks) for its integer dot "
    "products with quantized weights; ours dequantizes the weights and runs float GEMMs for a "
    "512-token window.")


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:+.2f}%"
