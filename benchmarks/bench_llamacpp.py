"""Ours vs llama.cpp vs transformers on the default model, side by side in one run.

    LLAMA_CPP=1 .venv/bin/python benchmarks/bench_llamacpp.py [--reps 5] [--new-tokens 64]

llama-cpp-python compiles llama.cpp from source (minutes), so it is installed into the venv
only when asked: LLAMA_CPP=1 or --install (`make bench` runs this only with LLAMA_CPP=1).
F32/F16/Q8_0/Q4_0/Q4_K_M GGUFs are written from the shipped Q4_1 GGUF (gguf_variants.py;
Q4_K_M by llama.cpp's own quantizer), so every engine runs the same weights: llama.cpp on
each file, ours on the Q8_0/Q4_0/Q4_K_M files with `--dtype auto` (the file's own
quantization; ours regroups Q4_K into Q4_1 and requantizes Q5_0/Q6_K to Q8_0), and ours
fp32/bf16/int8 from the shipped file. Each configuration runs in a fresh process per
repetition (llamacpp_worker.py), in an order rotated per repetition with each same-file
pair back to back (rep_order); tables show medians
and, per target, the median of the per-repetition ratios (paired: the two ran minutes
apart at most). Writes benchmarks/out/llamacpp.json; report.py renders it into RESULTS.md.
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

from common import OUT, PY, bench_env, log, machine, median, spread, write_json  # noqa: E402
from gguf_variants import ensure_variants, tensor_types  # noqa: E402

LLAMA_CPP_VERSION = "0.3.36"
# CPU only, nothing but the library (no server, examples or tests). Not GGML_NATIVE: a
# native build also emits AMX tile instructions on a CPU that lists amx_tile, and a VM
# that does not grant the AMX state (XFEATURE 17/18, arch_prctl ARCH_REQ_XCOMP_PERM) kills
# them with SIGILL; so the x86 ISA extensions are named one by one from /proc/cpuinfo and
# AMX is off (isa_cmake_args).
CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
              "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF "
              "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF")
# ggml's CMake option -> the /proc/cpuinfo flags it needs (GGML_AVX512 compiles with
# -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw).
ISA_OPTIONS = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}
QUESTION = "What is the capital of France?"
LLAMA = ["--engine", "llama"]
OURS_AUTO = ["--engine", "ours", "--dtype", "auto"]
# (label, worker args, GGUF variant or None for the default model's own import)
CONFIGS = [
    ("llama.cpp F32", LLAMA, "F32"),
    ("llama.cpp F16", LLAMA, "F16"),
    ("llama.cpp Q8_0", LLAMA, "Q8_0"),
    ("llama.cpp Q4_0", LLAMA, "Q4_0"),
    ("llama.cpp Q4_K_M", LLAMA, "Q4_K_M"),
    ("transformers fp32", ["--engine", "transformers"], None),
    ("ours fp32", ["--engine", "ours", "--dtype", "float32"], None),
    ("ours bf16", ["--engine", "ours", "--dtype", "bfloat16"], None),
    ("ours int8", ["--engine", "ours", "--dtype", "int8"], None),
    ("ours auto Q8_0", OURS_AUTO, "Q8_0"),
    ("ours auto Q4_0", OURS_AUTO, "Q4_0"),
    ("ours auto Q4_K_M", OURS_AUTO, "Q4_K_M"),
]
SAME_FILE = ("Q8_0", "Q4_0", "Q4_K_M")  # ours --dtype auto vs llama.cpp on the same file
DECODE_LIMIT_SAME_FILE = 1.2
# (ours, theirs, measure, limit): the targets.
RATIOS = [
    *[(f"ours auto {q}", f"llama.cpp {q}", "decode_ms_per_token", DECODE_LIMIT_SAME_FILE)
      for q in SAME_FILE],
    *[(f"ours auto {q}", f"llama.cpp {q}", key, None)
      for key in ("ttft_ms", "ttft_512_ms") for q in SAME_FILE],
    ("ours fp32", "llama.cpp F32", "decode_ms_per_token", 1.5),
    ("ours int8", "llama.cpp Q8_0", "decode_ms_per_token", 1.5),
    ("ours fp32", "llama.cpp F32", "ttft_512_ms", 1.5),
    ("ours int8", "llama.cpp Q8_0", "ttft_512_ms", 1.5),
    ("ours bf16", "llama.cpp F16", "decode_ms_per_token", None),
    ("ours fp32", "transformers fp32", "decode_ms_per_token", None),
    ("ours fp32", "ours fp32 (baseline)", "decode_ms_per_token", None),
    ("ours fp32", "ours fp32 (baseline)", "ttft_512_ms", None),
]


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def isa_cmake_args(flags: set[str] | None = None) -> str:
    """-DGGML_<ISA>=ON/OFF for each x86 extension ggml can use, from this CPU's flags
    (all OFF where /proc/cpuinfo says nothing, e.g. on ARM, where ggml picks its own)."""
    flags = cpu_flags() if flags is None else flags
    return " ".join(f"-D{opt}={'ON' if all(f in flags for f in need) else 'OFF'}"
                    for opt, need in ISA_OPTIONS.items())


def llama_cpp_installed() -> bool:
    return subprocess.call([PY, "-c", "import llama_cpp"], stderr=subprocess.DEVNULL) == 0


def install_llama_cpp() -> float:
    """pip-install llama-cpp-python into this venv (a from-source build); seconds taken."""
    log(f"building llama-cpp-python=={LLAMA_CPP_VERSION} (compiles llama.cpp, minutes)")
    env = dict(os.environ, CMAKE_ARGS=f"{CMAKE_ARGS} {isa_cmake_args()}",
               CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 1))
    t0 = time.monotonic()
    subprocess.check_call([PY, "-m", "pip", "install", "-q", "--no-cache-dir",
                           f"llama-cpp-python=={LLAMA_CPP_VERSION}"], env=env)
    return round(time.monotonic() - t0, 1)


def prepare_ids(cache: Path) -> Path:
    """The chat prompt and a 512-token prompt as ids, and the imported model dir."""
    from core.model.model_dir import resolve_model
    from core.model.tokenizer import ChatTokenizer

    model_dir = resolve_model(None)
    tok = ChatTokenizer(model_dir)
    prompt = tok.apply_chat([{"role": "user", "content": QUESTION}], add_generation_prompt=True)
    text = (HERE.parent / "README.md").read_text()
    long = tok.encode(text * (1 + 4096 // max(1, len(text) // 4)))[:512]
    path = cache / "ids.json"
    path.write_text(json.dumps({"prompt": prompt, "long": long, "model_dir": str(model_dir)}))
    return path


def presplit(ggufs: dict[str, Path]) -> dict[str, dict]:
    """Split the default model for each of our dtypes, and each same-file GGUF with
    --dtype auto, now, so no run pays for it. Per same-file variant: what our split makes
    of each of its types, and the conversion error the split reported (said only by the
    split that writes the shards, so kept beside the file for later runs)."""
    for dtype in ("fp32", "bf16", "int8"):
        subprocess.check_call([PY, "-m", "core.cli", "split", "--dtype", dtype],
                              env=bench_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    out = {}
    for q in SAME_FILE:
        split = subprocess.run([PY, "-m", "core.cli", "split", "--model", str(ggufs[q]),
                                "--dtype", "auto"], env=bench_env(), capture_output=True,
                               text=True, check=True)
        said = [ln.strip() for ln in (split.stdout + split.stderr).splitlines()
                if ln.strip().startswith("converted ")]
        note = ggufs[q].with_suffix(".split.txt")
        if said:
            note.write_text("\n".join(said))
        elif note.is_file():
            said = note.read_text().splitlines()
        formats = subprocess.run([PY, str(HERE / "gguf_variants.py"), "--ours", str(ggufs[q])],
                                 env=bench_env(), capture_output=True, text=True, check=True)
        out[q] = {"formats": json.loads(formats.stdout.strip().splitlines()[-1]),
                  "split_said": said}
    return out


def run_config(args: list[str], gguf: Path | None, ids: Path, n: int, threads: int,
               tree: Path | None = None) -> dict:
    """One worker process; `tree` runs the worker of another checkout (a baseline)."""
    worker = (tree or HERE.parent) / "benchmarks" / "llamacpp_worker.py"
    cmd = [PY, str(worker), *args, "--ids", str(ids), "--new-tokens", str(n),
           "--threads", str(threads)]
    if gguf is not None:
        cmd += ["--gguf", str(gguf)]
    env = bench_env()
    if tree is not None:  # its own shard cache: its block format may differ from ours
        env["PYTHONPATH"] = str(tree)
        env["TPI_CHAT_CACHE"] = str(OUT / "cache-baseline")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def rep_order(configs: list, rep: int) -> list:
    """Repetition `rep`'s order: the same-file pairs (llama.cpp X, ours auto X) run back to
    back, first one then the other alternately, so a pair's ratio compares runs seconds
    apart; the pairs and the other configurations take turns going first."""
    by_label = {c[0]: c for c in configs}
    partner = {f"ours auto {q}": by_label[f"llama.cpp {q}"] for q in SAME_FILE
               if f"ours auto {q}" in by_label and f"llama.cpp {q}" in by_label}
    placed = {c[0] for c in partner.values()}  # each runs beside its ours auto partner
    units = [[partner[c[0]], c] if c[0] in partner else [c]
             for c in configs if c[0] not in placed]
    units = [u[::-1] if rep % 2 else u for u in units]
    k = rep % len(units)
    return [c for unit in units[k:] + units[:k] for c in unit]


def summarize(runs: dict[str, list[dict]]) -> dict:
    summary = {}
    fp32 = runs.get("ours fp32", [{}])[0].get("token_ids", [])
    for label, rs in runs.items():
        dec = [r["decode_ms_per_token"] for r in rs]
        long = [r["ttft_512_ms"] for r in rs]
        short = [r["ttft_ms"] for r in rs]
        toks = rs[0]["token_ids"]
        summary[label] = {
            "decode_ms_per_token": median(dec), "decode_spread": spread(dec),
            "ttft_512_spread": spread(long), "ttft_spread": spread(short),
            "ttft_ms": median(short),
            "ttft_512_ms": median(long),
            "same_first16_as_ours_fp32": sum(a == b for a, b in zip(toks[:16], fp32[:16],
                                                                    strict=False)),
            "runs": len(rs),
        }
    ratios = []
    for ours, theirs, key, limit in RATIOS:
        a, b = summary.get(ours, {}).get(key), summary.get(theirs, {}).get(key)
        if ours not in summary or theirs not in summary:
            continue
        sp = key.replace("_ms_per_token", "").replace("_ms", "") + "_spread"
        worst = max((summary[x].get(sp) or 0) for x in (ours, theirs))
        pairs = [x[key] / y[key] for x, y in zip(runs[ours], runs[theirs], strict=False)
                 if x.get(key) and y.get(key)]
        ratios.append({"ours": ours, "theirs": theirs, "measure": key, "limit": limit,
                       "ratio": round(a / b, 3) if a and b else None,
                       "paired": median(pairs), "paired_spread": spread(pairs),
                       "worst_spread": worst})
    return {"by_config": summary, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--install", action="store_true", help="build llama-cpp-python if missing")
    ap.add_argument("--out", default="llamacpp.json", help="file name under benchmarks/out")
    ap.add_argument("--configs", default=None,
                    help="comma-separated labels to run (default: all), e.g. "
                         "'llama.cpp Q4_0,ours auto Q4_0'")
    ap.add_argument("--baseline-tree", type=Path, default=None,
                    help="also run 'ours fp32 (baseline)' from this checkout (a git worktree "
                         "of an older commit, with this llamacpp_worker.py copied in)")
    args = ap.parse_args(argv)
    os.environ.update(bench_env())
    build_s = None
    if not llama_cpp_installed():
        if not (args.install or os.environ.get("LLAMA_CPP") == "1"):
            log("llama-cpp-python is not installed; run with LLAMA_CPP=1 to build it")
            return 2
        build_s = install_llama_cpp()
    from core.model.default_model import default_gguf_path

    started = machine()
    ggufs = ensure_variants(default_gguf_path(), OUT / "gguf")
    ids = prepare_ids(OUT)
    converted = presplit(ggufs)
    configs = CONFIGS + ([("ours fp32 (baseline)", ["--engine", "ours"], None)]
                         if args.baseline_tree else [])
    if args.configs:
        wanted = [c.strip() for c in args.configs.split(",")]
        configs = [c for c in configs if c[0] in wanted]
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
    for rep in range(args.reps):
        for label, wargs, qtype in rep_order(configs, rep):
            tree = args.baseline_tree if label.endswith("(baseline)") else None
            r = run_config(wargs, ggufs[qtype] if qtype else None, ids, args.new_tokens,
                           args.threads, tree)
            runs[label].append(r)
            log(f"rep {rep + 1}/{args.reps} {label}: decode {r['decode_ms_per_token']} ms/tok, "
                f"TTFT {r['ttft_ms']} ms, TTFT-512 {r['ttft_512_ms']} ms")
    data = {"machine": started, "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
            "llama_cpp_version": LLAMA_CPP_VERSION, "build_s": build_s, "reps": args.reps,
            "new_tokens": args.new_tokens, "threads": args.threads,
            "prompt_tokens": len(json.loads(ids.read_text())["prompt"]),
            "gguf_mb": {q: round(p.stat().st_size / (1 << 20), 1) for q, p in ggufs.items()},
            "gguf_types": {q: tensor_types(p) for q, p in ggufs.items()},
            "ours_converted": converted, "decode_limit_same_file": DECODE_LIMIT_SAME_FILE,
            "cmake_args": f"{CMAKE_ARGS} {isa_cmake_args()}",
            **summarize(runs), "runs": runs}
    log(f"wrote {write_json(args.out, data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
