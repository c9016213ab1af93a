"""Perplexity of ours vs llama.cpp on the same GGUF files and the same token windows.

    LLAMA_CPP=1 .venv/bin/python benchmarks/bench_perplexity.py [--windows 8] [--context 512]

For each GGUF variant of the default model (F32, the reference, then Q8_0, Q4_0, Q4_K_M;
gguf_variants.py): ours is `tpi-chat perplexity --model FILE --text T --context 512 --json`
(--dtype auto: the file's own quantization, 1 rank, 2 threads), llama.cpp's is computed
through llama-cpp-python on the same file (llamacpp_perplexity.py: our tokenizer and
windows, our scoring code, llama.cpp's logits). T is the benchmarks/data text cut to its
first --windows windows (0: the whole text), the same file for both, so both score the same
tokens. Target: |ours / llama.cpp - 1| <= 1% on every file. Writes
benchmarks/out/perplexity.json.
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
sys.path.insert(0, str(HERE.parent))

from common import OUT, PY, bench_env, log, machine, write_json  # noqa: E402
from gguf_variants import ensure_variants  # noqa: E402

TEXT = HERE / "data" / "devils_dictionary_a_to_d.txt"
VARIANTS = ("F32", "Q8_0", "Q4_0", "Q4_K_M")
LIMIT = 0.01  # |ours / llama.cpp - 1|


def _json_line(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, env=bench_env(), capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])}... exited {out.returncode}:\n"
                           f"{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ours(gguf: Path, text: Path, context: int, threads: int) -> dict:
    t0 = time.monotonic()
    r = _json_line([PY, "-m", "core.cli", "perplexity", "--model", str(gguf), "--text",
                    str(text), "--context", str(context), "--threads", str(threads),
                    "--json"])
    return {**r, "wall_s": round(time.monotonic() - t0, 1)}


def theirs(gguf: Path, text: Path, context: int, threads: int) -> dict:
    t0 = time.monotonic()
    r = _json_line([PY, str(HERE / "llamacpp_perplexity.py"), "--gguf", str(gguf), "--text",
                    str(text), "--context", str(context), "--threads", str(threads)])
    return {**r, "wall_s": round(time.monotonic() - t0, 1)}


def summarise(res: dict[str, dict]) -> dict:
    rows = {}
    ref = res.get("F32", {})
    for q, r in res.items():
        a, b = r["ours"]["perplexity"], r["llama.cpp"]["perplexity"]
        rows[q] = {
            "ours": a, "ours_error": r["ours"]["perplexity_error"],
            "llama_cpp": b, "llama_cpp_error": r["llama.cpp"]["perplexity_error"],
            "rel_diff": round(a / b - 1, 5),
            "pass": abs(a / b - 1) <= LIMIT,
            "ours_vs_f32": round(a / ref["ours"]["perplexity"] - 1, 5) if ref else None,
            "llama_cpp_vs_f32": (round(b / ref["llama.cpp"]["perplexity"] - 1, 5)
                                 if ref else None),
            "same_tokens": r["llama.cpp"]["same_tokens"],
            "tokens": r["ours"]["tokens"], "windows": r["ours"]["windows"],
            "ours_s": r["ours"]["seconds"], "llama_cpp_s": r["llama.cpp"]["seconds"],
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=8, help="windows scored (0: all)")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args(argv)
    from core.model.default_model import default_gguf_path

    started = machine()
    ggufs = ensure_variants(default_gguf_path(), OUT / "gguf")
    text = TEXT
    cap = None
    if args.windows:
        text = OUT / f"perplexity_text_{args.windows}w.txt"
        cap = _json_line([PY, str(HERE / "llamacpp_perplexity.py"), "--gguf",
                          str(ggufs["F32"]), "--cap", str(TEXT), "--windows",
                          str(args.windows), "--context", str(args.context), "--out", str(text)])
        log(f"text: first {cap['windows']} windows of {TEXT.name} ({cap['tokens']} tokens)")
    res: dict[str, dict] = {}
    for i, q in enumerate(args.variants.split(",")):
        engines = [("ours", ours), ("llama.cpp", theirs)]
        if i % 2:  # alternate who goes first
            engines.reverse()
        res[q] = {}
        for name, fn in engines:
            r = fn(ggufs[q], text, args.context, args.threads)
            res[q][name] = r
            log(f"{q} {name}: perplexity {r['perplexity']} +/- {r['perplexity_error']} over "
                f"{r['tokens']} tokens, {r['seconds']} s")
    data = {"machine": started, "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
            "text": TEXT.name, "cap": cap, "context": args.context, "threads": args.threads,
            "limit": LIMIT, "runs": res, "by_variant": summarise(res)}
    log(f"wrote {write_json('perplexity.json', data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
