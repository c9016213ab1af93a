"""A Llama 2-70B-shaped layer stack at 8 ranks in the q4 format: memory and time per layer.

    .venv/bin/python benchmarks/bench_70b.py [--depths 2,6] [--reps 3] [--window 2]

The whole 70B model (80 layers, ~39 GB at Q4_1) does not fit this machine, so stacks of a
few layers of exactly its layer shape (hidden 8192, MLP 28672, 64 heads over 8 KV heads,
head dim 128) are written as synthetic Q4_1 GGUFs (random nibbles, small finite fp16
scales; the default model's 49k-token tokenizer, so the import is real: the embedding and
head are 49152 x 8192 where Llama 2 has 32000), split for 8 ranks with `--dtype q4`
(Q4_1 blocks carried byte for byte) and run with `tpi-chat generate --ranks 8 --dtype q4`:
8 processes on this machine, 16 greedy tokens of a raw prompt, window all (and window 2
at the deepest stack). Peak RSS per process is each process's VmHWM sampled by psutil
(common.run_watched), beside the CLI's own `peak_rss_mb`.

Two depths give a slope, so the embedding, head and start-up costs cancel out:
  ms per layer per token = (decode(L2) - decode(L1)) / (L2 - L1)
  decode at 80 layers    = decode(L2) + (80 - L2) * that slope
and the same for each rank's peak RSS (window all holds every layer; window 2 does not
grow with depth, so its RSS at L2 is its RSS at 80 layers). Configurations run in an
order rotated per repetition; medians. Writes benchmarks/out/llama70b.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import OUT, PY, log, machine, median, run_watched, spread, write_json  # noqa: E402

SHAPE = dict(hidden=8192, ffn=28672, heads=64, kv_heads=8, layers=80)  # Llama 2-70B
RANKS = 8
NEW_TOKENS = 16
PROMPT = "The quick brown fox jumps over the lazy dog. A tensor parallel model splits every layer."
Q4_1_BLOCK = (32, 20)  # weights, bytes: fp16 d, fp16 m, 16 bytes of nibbles
# The TPI-LLM paper (Li et al. 2024, arXiv 2410.00531), Llama 2-70B on 8 devices, fp32
# weights with its sliding-window memory scheduler: "requiring only 3.1 GB of memory for
# 70B-scale models", a 90% cut of the peak memory footprint (abstract; the experiments of
# section 4). The project's README says the same run as "8 devices with 3GB of memory on
# each device".
PAPER = {"peak_memory_gb_per_device": 3.1, "devices": 8, "weights": "fp32",
         "source": "TPI-LLM (arXiv 2410.00531v1), abstract and section 4 (experiments): "
                   "Llama 2-70B on 8 devices, 3.1 GB peak memory per device"}


def model_path(layers: int) -> Path:
    return OUT / "models" / f"llama2-70b-shape-{layers}L.Q4_1.gguf"


def _q4_1(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random Q4_1 rows: nibbles uniform, w = d*q + m in about [-0.03, 0.03]."""
    per, size = Q4_1_BLOCK
    n = rows * cols // per
    raw = np.frombuffer(rng.bytes(n * size), np.uint8).reshape(n, size).copy()
    raw[:, 0:2] = np.array([0.004], np.float16).view(np.uint8)
    raw[:, 2:4] = np.array([-0.03], np.float16).view(np.uint8)
    return raw.reshape(rows, -1)


def write_model(path: Path, layers: int) -> Path:
    """A Q4_1 GGUF of `layers` Llama 2-70B-shaped layers, written tensor by tensor."""
    import gguf

    from core.model.default_model import default_gguf_path

    src = gguf.GGUFReader(default_gguf_path())
    h, f, nh, nkv = SHAPE["hidden"], SHAPE["ffn"], SHAPE["heads"], SHAPE["kv_heads"]
    hd = h // nh
    vocab = len(src.get_field("tokenizer.ggml.tokens").contents())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_block_count(layers)
    w.add_context_length(4096)
    w.add_embedding_length(h)
    w.add_feed_forward_length(f)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(3)  # LLAMA_FTYPE_MOSTLY_Q4_1
    for field in src.fields.values():  # the real tokenizer and chat template
        if field.name.startswith("tokenizer."):
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    plan: list[tuple[str, tuple[int, int] | int]] = [("token_embd.weight", (vocab, h))]
    for i in range(layers):
        p = f"blk.{i}."
        plan += [(p + "attn_norm.weight", h), (p + "attn_q.weight", (h, h)),
                 (p + "attn_k.weight", (nkv * hd, h)), (p + "attn_v.weight", (nkv * hd, h)),
                 (p + "attn_output.weight", (h, h)), (p + "ffn_norm.weight", h),
                 (p + "ffn_gate.weight", (f, h)), (p + "ffn_up.weight", (f, h)),
                 (p + "ffn_down.weight", (h, f))]
    plan += [("output_norm.weight", h), ("output.weight", (vocab, h))]
    q4_1 = gguf.GGMLQuantizationType.Q4_1
    for name, shape in plan:  # tensor infos first, then the data one tensor at a time
        if isinstance(shape, int):
            w.add_tensor_info(name, (shape,), np.dtype(np.float32), shape * 4)
        else:
            rows, cols = shape
            nbytes = rows * cols // Q4_1_BLOCK[0] * Q4_1_BLOCK[1]
            w.add_tensor_info(name, (rows, nbytes // rows), np.dtype(np.uint8), nbytes,
                              raw_dtype=q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(layers)
    for _, shape in plan:
        w.write_tensor_data(np.ones(shape, np.float32) if isinstance(shape, int)
                            else _q4_1(*shape, rng))
    w.close()
    tmp.replace(path)
    return path


def ensure_model(layers: int) -> Path:
    """The stack of `layers` layers, written in a child process on first use (this
    driver stays small: its children would inherit its peak in their ru_maxrss)."""
    path = model_path(layers)
    if not path.is_file():
        log(f"writing {path.name} (~{layer_bytes() * layers / 1e9 + 0.5:.1f} GB)")
        subprocess.check_call([PY, __file__, "--build", str(layers)])
    return path


def layer_bytes() -> int:
    """Bytes of one 70B-shaped layer's matrices at Q4_1."""
    h, f, nkv = SHAPE["hidden"], SHAPE["ffn"], SHAPE["kv_heads"]
    kv = nkv * h // SHAPE["heads"]
    params = 2 * h * h + 2 * kv * h + 3 * f * h
    return params // Q4_1_BLOCK[0] * Q4_1_BLOCK[1]


def _tpi(*args: str) -> list[str]:
    return [PY, "-m", "core.cli", *args]


def split(path: Path) -> dict:
    w = run_watched(_tpi("split", "--model", str(path), "--ranks", str(RANKS), "--dtype", "q4"),
                    timeout_s=3600)
    return {"wall_s": round(w.wall_s, 1), "peak_rss_mb": round(w.peak_tree_rss_mb),
            "said": w.stdout.strip().splitlines()[-1:] + w.stderr.strip().splitlines()[-1:]}


def run_one(path: Path, window: str) -> dict:
    w = run_watched(_tpi("generate", "--model", str(path), "--raw", "--prompt", PROMPT,
                         "--ranks", str(RANKS), "--dtype", "q4", "--window", window,
                         "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS),
                         "--json"), timeout_s=1800)
    res = w.last_json()
    res.pop("text", None)
    # the CLI (rank 0) and its rank processes; a compiler the first run may start is not one
    ranks = sorted((p for p in w.procs.values() if "core.cli" in p.cmd), key=lambda p: p.rank)
    io = w.io_summary()
    io["peak_rss_mb_per_process"] = [round(p.peak_rss_mb, 1) for p in ranks]
    io["sum_peak_rss_mb"] = round(sum(p.peak_rss_mb for p in ranks), 1)
    return {**res, **io}


def warm_up(path: Path) -> None:
    """One untimed run: the first run in a fresh cache compiles the kernels."""
    run_watched(_tpi("generate", "--model", str(path), "--raw", "--prompt", PROMPT,
                     "--ranks", str(RANKS), "--dtype", "q4", "--max-new-tokens", "2"),
                timeout_s=1800)


def summarise(runs: dict[str, list[dict]], depths: list[int], deep_window: str | None) -> dict:
    by = {}
    for label, rs in runs.items():
        per_rank = [r["peak_rss_mb_per_process"] for r in rs]
        n = min(len(p) for p in per_rank)
        dec = [r["decode_ms_per_token"] for r in rs]
        by[label] = {
            "decode_ms_per_token": median(dec), "decode_spread": spread(dec),
            "ttft_ms": median([r["ttft_ms"] for r in rs]),
            "peak_rss_mb_per_process": [median([p[i] for p in per_rank]) for i in range(n)],
            "cli_peak_rss_mb": [median([r["peak_rss_mb"][i] for r in rs])
                                for i in range(len(rs[0]["peak_rss_mb"]))],
            "sum_peak_rss_mb": median([r["sum_peak_rss_mb"] for r in rs]),
            "ru_read_mb": median([r["ru_read_mb"] for r in rs]),
            "runs": len(rs),
        }
    lo, hi = f"{depths[0]}L all", f"{depths[-1]}L all"
    span = depths[-1] - depths[0]
    a, b = by[lo], by[hi]
    ms_layer = (b["decode_ms_per_token"] - a["decode_ms_per_token"]) / span
    left = SHAPE["layers"] - depths[-1]
    rss_slope = [(y - x) / span for x, y in zip(a["peak_rss_mb_per_process"],
                                                 b["peak_rss_mb_per_process"], strict=False)]
    rss80 = [y + left * s for y, s in zip(b["peak_rss_mb_per_process"], rss_slope,
                                           strict=False)]
    out = {
        "by_config": by,
        "ms_per_layer_per_token": round(ms_layer, 2),
        "ms_per_layer_naive": round(b["decode_ms_per_token"] / depths[-1], 2),
        "decode_ms_per_token_80": round(b["decode_ms_per_token"] + left * ms_layer, 1),
        "rss_mb_per_layer_per_process": [round(s, 1) for s in rss_slope],
        "peak_rss_mb_per_process_80": [round(x) for x in rss80],
    }
    if deep_window:
        w = by[f"{depths[-1]}L w{deep_window}"]
        out["window"] = deep_window
        out["window_peak_rss_mb_per_process_80"] = w["peak_rss_mb_per_process"]
        out["window_ms_per_layer_naive"] = round(w["decode_ms_per_token"] / depths[-1], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="2,6", help="two stack depths (layers), for slopes")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--window", default="2", help="also run the deepest stack with this "
                    "window ('' for none)")
    ap.add_argument("--build", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build is not None:
        write_model(model_path(args.build), args.build)
        return 0
    depths = sorted(int(x) for x in args.depths.split(","))
    if len(depths) != 2 or depths[0] == depths[1]:
        ap.error("--depths takes two different layer counts")
    started = machine()
    models = {d: ensure_model(d) for d in depths}
    splits = {}
    for d, path in models.items():
        log(f"splitting {path.name} for {RANKS} ranks, --dtype q4")
        splits[d] = split(path)
    log("warm-up run (not timed)")
    warm_up(models[depths[0]])
    configs = [(f"{d}L all", models[d], "all") for d in depths]
    if args.window:
        configs.append((f"{depths[-1]}L w{args.window}", models[depths[-1]], args.window))
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
    for rep in range(args.reps):
        order = configs[rep % len(configs):] + configs[:rep % len(configs)]
        for label, path, window in order:
            r = run_one(path, window)
            runs[label].append(r)
            log(f"rep {rep + 1}/{args.reps} {label}: decode {r['decode_ms_per_token']} ms/tok, "
                f"TTFT {r['ttft_ms']} ms, peak RSS {r['peak_rss_mb_per_process']} MB")
    data = {"machine": started, "shape": SHAPE, "ranks": RANKS, "depths": depths,
            "new_tokens": NEW_TOKENS, "reps": args.reps, "dtype": "q4 (Q4_1 blocks)",
            "layer_mb_q4": round(layer_bytes() / 2**20, 1),
            "file_mb": {d: round(p.stat().st_size / 2**20) for d, p in models.items()},
            "split": splits, "paper": PAPER, "runs": runs,
            **summarise(runs, depths, args.window or None)}
    log(f"wrote {write_json('llama70b.json', data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
