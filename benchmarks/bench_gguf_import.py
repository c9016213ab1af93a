"""Importing and splitting a 2+ GB GGUF: peak anonymous memory, bytes written, time.

    .venv/bin/python benchmarks/bench_gguf_import.py [--layers 30] [--keep]

Writes a synthetic Q4_K_M-style GGUF (a ~3B Llama shape: Q4_K for q/k/o/gate/up, Q6_K for
v/down/embedding/output, as llama.cpp's Q4_K_M mix does; random blocks with sane scales;
the default model's 49k-token tokenizer so the tokenizer conversion is real), then runs
`tpi-chat split --model FILE --ranks 2` in a fresh cache and samples the process's RssAnon
(memory that is not the memory-mapped file or page cache) every 20 ms. Also reports the
kernel's peak RSS (VmHWM, file pages included), the bytes the split wrote to the cache over
the file's size, page faults and disk reads. Writes benchmarks/out/gguf_import.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import OUT, PY, bench_env, log, machine, write_json  # noqa: E402

SHAPE = dict(hidden=3072, ffn=8192, heads=24, kv_heads=8, vocab=49152)
BYTES = {"Q4_K": (256, 144), "Q6_K": (256, 210)}  # (weights, bytes) per block


def _blocks(kind: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random blocks of `kind` whose fp16 scales are small and finite."""
    per, size = BYTES[kind]
    raw = rng.integers(0, 256, (rows * cols // per, size), dtype=np.uint8)
    scale = np.full((raw.shape[0], 1), 0.0005, np.float16).view(np.uint8)
    if kind == "Q4_K":
        raw[:, 0:2] = scale
        raw[:, 2:4] = scale
    else:  # Q6_K: ql[128] qh[64] scales[16] then d
        raw[:, 208:210] = scale
    return raw.reshape(rows, -1)


def write_model(path: Path, layers: int) -> Path:
    import gguf

    from core.model.default_model import default_gguf_path

    src = gguf.GGUFReader(default_gguf_path())
    h, f, nh, nkv, v = (SHAPE[k] for k in ("hidden", "ffn", "heads", "kv_heads", "vocab"))
    hd = h // nh
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(4096)
    w.add_embedding_length(h)
    w.add_feed_forward_length(f)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-5)
    for field in src.fields.values():  # the real tokenizer and chat template
        if field.name.startswith("tokenizer."):
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
    rng = np.random.default_rng(0)
    T = gguf.GGMLQuantizationType

    def add(name: str, kind: str, rows: int, cols: int) -> None:
        w.add_tensor(name, _blocks(kind, rows, cols, rng), raw_dtype=T[kind])

    add("token_embd.weight", "Q6_K", v, h)
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(h, np.float32))
        add(p + "attn_q.weight", "Q4_K", h, h)
        add(p + "attn_k.weight", "Q4_K", nkv * hd, h)
        add(p + "attn_v.weight", "Q6_K", nkv * hd, h)
        add(p + "attn_output.weight", "Q4_K", h, h)
        w.add_tensor(p + "ffn_norm.weight", np.ones(h, np.float32))
        add(p + "ffn_gate.weight", "Q4_K", f, h)
        add(p + "ffn_up.weight", "Q4_K", f, h)
        add(p + "ffn_down.weight", "Q6_K", h, f)
    w.add_tensor("output_norm.weight", np.ones(h, np.float32))
    add("output.weight", "Q6_K", v, h)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("RssAnon", "VmHWM"):
                out[key] = int(val.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def run_split(model: Path, cache: Path) -> dict:
    env = dict(bench_env(), TPI_CHAT_CACHE=str(cache))
    t0 = time.monotonic()
    proc = subprocess.Popen([PY, "-m", "core.cli", "split", "--model", str(model), "--ranks",
                             "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak = {"RssAnon": 0, "VmHWM": 0}

    def sample() -> None:
        while proc.poll() is None:
            for k, val in _status(proc.pid).items():
                peak[k] = max(peak[k], val)
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    before = os.wait4  # children's rusage comes back with the exit status
    _, status, usage = before(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    out, err = proc.stdout.read(), proc.stderr.read()
    if proc.returncode:
        raise SystemExit(f"split failed ({proc.returncode}):\n{err[-2000:]}")
    written = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()
                  and "kernels" not in p.parts)
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "peak_anon_mb": round(peak["RssAnon"] / 2**20),
        "peak_rss_mb": round(max(peak["VmHWM"], usage.ru_maxrss * 1024) / 2**20),
        "written_mb": round(written / 2**20),
        "major_faults": usage.ru_majflt,
        "block_reads": usage.ru_inblock,
        "report": (out + err).strip().splitlines()[-8:],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--keep", action="store_true", help="keep the GGUF for the next run")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    model = OUT / f"synthetic-q4_k_m-{args.layers}L.gguf"
    if not model.is_file():
        log(f"writing {model.name} ...")
        write_model(model, args.layers)
    size = model.stat().st_size
    cache = OUT / "import-cache"
    shutil.rmtree(cache, ignore_errors=True)
    log(f"importing and splitting {size / 2**30:.2f} GB for 2 ranks ...")
    res = run_split(model, cache)
    res |= {"file_mb": round(size / 2**20), "written_over_file": round(
        res["written_mb"] * 2**20 / size, 3), "machine": machine(), "shape": SHAPE,
        "layers": args.layers}
    shutil.rmtree(cache, ignore_errors=True)
    if not args.keep:
        model.unlink()
    write_json("gguf_import.json", res)
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
