"""The "ours vs llama.cpp" section of RESULTS.md, from benchmarks/out/llamacpp.json."""

from __future__ import annotations

from cells import fmt

NOISY = 0.5  # (max - min) / median over the repetitions above which a verdict is not given
MEASURES = {"decode_ms_per_token": "decode ms/token", "ttft_512_ms": "TTFT 512-token prompt"}


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


def llamacpp_section(d: dict) -> list[str]:
    m = d["machine"]
    built = f"; llama-cpp-python built in {d['build_s']} s" if d.get("build_s") else ""
    lines = [
        f"## Ours vs llama.cpp, {d['threads']} thread(s) (benchmarks/bench_llamacpp.py, "
        "`LLAMA_CPP=1 make bench`)", "",
        f"Started {m['date']}, load average then {m['load_avg_at_start']}, at end "
        f"{d['load_avg_at_end']}; {m['cpu']}, {m['cores']} cores{built}. "
        f"llama-cpp-python {d['llama_cpp_version']}; default model (SmolLM2-135M-Instruct) "
        f"as F32/F16/Q8_0 GGUFs ({', '.join(f'{k} {v} MB' for k, v in d['gguf_mb'].items())})"
        f" re-encoded from the shipped Q4_1, so all engines run the same weights. "
        f"{d['reps']} repetitions, each configuration a fresh process, order rotated; "
        f"medians. {d['new_tokens']} greedy tokens (EOS ignored), {d['prompt_tokens']}-token "
        f"chat prompt, {d['threads']} threads everywhere, ours at 1 rank, all resident. "
        f"A target whose runs spread more than {NOISY} (max - min over median) on either "
        "side gets no verdict: llama.cpp's threads spin-wait at barriers, so a busy core "
        "costs it far more than it costs us.", "",
        "| target | ratio of medians | limit | result |", "|---|---|---|---|",
    ]
    for r in d["ratios"]:
        verdict = ("-" if r["limit"] is None else "not measured" if r["ratio"] is None
                   else f"noisy (spread {r['worst_spread']:.2f})"
                   if (r.get("worst_spread") or 0) > NOISY
                   else "PASS" if r["ratio"] <= r["limit"] else "MISS")
        lines.append(f"| {r['ours']} / {r['theirs']}, {MEASURES[r['measure']]} | "
                     f"{fmt(r['ratio'], 2)} | {'-' if r['limit'] is None else r['limit']} | "
                     f"{verdict} |")
    lines += ["", "| engine | decode ms/token | spread | TTFT ms | TTFT-512 ms | "
              "first 16 tokens as ours fp32 |", "|---|---|---|---|---|---|"]
    for label, s in d["by_config"].items():
        lines.append(f"| {label} | {fmt(s['decode_ms_per_token'])} | {fmt(s['decode_spread'], 2)} "
                     f"| {fmt(s['ttft_ms'], 0)} | {fmt(s['ttft_512_ms'], 0)} | "
                     f"{s['same_first16_as_ours_fp32']}/16 |")
    lines += ["", FIRST16_NOTE, "", KERNELS_NOTE]
    return lines + [""]
