"""Streaming weights behind compute (issue 6, item 4): window 2 vs all-resident decode.

Default model (SmolLM2-135M, fp32), greedy, side by side in one run, each configuration a
fresh process, order rotated per repetition, medians:

  A. 1 rank in-process (core.engine.RankRuntime), 2 threads:
     resident   window all
     warm w2    window 2, block files stay in the page cache between tokens
     cold w2    window 2, each block file dropped from the page cache after use
                (posix_fadvise DONTNEED), so every token reads every block from disk
     and the disk's sequential read speed over the same files (dropped first), so the cold
     decode is compared with bytes-streamed-per-token / read speed.
  B. 2 ranks through the CLI with emulated link latency 0 and 2 ms (Wi-Fi-like), window 2 vs
     all: the paper's regime, where allreduce latency leaves time to load the next block.

Page faults and bytes read from disk (/proc/self/io) are logged beside every timing: the
machine pages out memory idle for ~30 s, so "warm" is only as warm as those columns say.

    .venv/bin/python benchmarks/bench_streaming.py [--reps 3] [--tokens 32]

Writes benchmarks/out/streaming.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PY, ROOT, bench_env, log, machine, median, spread, write_json  # noqa: E402

PROMPT_IDS = list(range(1000, 1037))  # 37 tokens, like the chat prompt of the other benches
CONFIGS = {"resident": (None, False), "warm w2": (2, False), "cold w2": (2, True)}
LINK_DELAYS_MS = (0.0, 2.0)
CLI_PROMPT = "Tell me a story about a dragon."


def _read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def rank_dir() -> Path:
    """The default model split for 1 rank (fp32), splitting it if needed."""
    code = ("from core.ranks.local_cluster import LocalCluster; from core.engine.options import "
            "RunOptions; from core.model.model_dir import resolve_model; "
            "c = LocalCluster(resolve_model(None), RunOptions(ranks=1, window=2)).start(); "
            "print(c.rank_dirs[0]); c.close()")
    out = subprocess.run([PY, "-c", code], check=True, cwd=ROOT, env=bench_env(),
                         stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def run_one(rdir: Path, config: str, tokens: int) -> dict:
    """In this process: prefill, then `tokens` decode steps; times, faults, disk reads."""
    import torch

    from core.engine.head import Head
    from core.engine.master import MasterRunner, SoloGroup
    from core.engine.rank import RankRuntime

    torch.set_num_threads(2)
    window, cold = CONFIGS[config]
    rt = RankRuntime(rdir, SoloGroup(), window, context=512, evict_streamed=cold)
    if window is None:
        rt.scheduler.wait_all_loaded()
    m = MasterRunner(Head(rdir, rt.manifest), rt, SoloGroup())
    m.step(PROMPT_IDS, 0)
    pos = len(PROMPT_IDS)
    m.step([200], pos)  # one warm-up token
    pos += 1
    faults0, disk0 = resource.getrusage(resource.RUSAGE_SELF), _read_bytes()
    streamed0, stall0 = rt.scheduler.stats.bytes_read, rt.scheduler.stats.stall_s
    t0 = time.perf_counter()
    for _ in range(tokens):
        m.step([200], pos)
        pos += 1
    dt = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    st = rt.scheduler.stats
    rt.close()
    return {
        "ms_per_token": round(dt / tokens * 1000, 2),
        "streamed_mb_per_token": round((st.bytes_read - streamed0) / tokens / 2**20, 1),
        "disk_mb_per_token": round((_read_bytes() - disk0) / tokens / 2**20, 1),
        "major_faults_per_token": round((ru.ru_majflt - faults0.ru_majflt) / tokens, 1),
        "minor_faults_per_token": round((ru.ru_minflt - faults0.ru_minflt) / tokens),
        "stall_ms_per_token": round((st.stall_s - stall0) / tokens * 1000, 2),
    }


def disk_speed(rdir: Path) -> dict:
    """Sequential read speed of the rank's block files, each dropped from the cache first."""
    from core.engine.page_cache import evict

    files = sorted(rdir.glob("*.safetensors"))
    for f in files:
        evict(f)
    disk0, total, t0 = _read_bytes(), 0, time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(4 << 20):
                total += len(chunk)
    dt = time.perf_counter() - t0
    return {"mb": round(total / 2**20, 1), "s": round(dt, 3),
            "mb_per_s": round(total / 2**20 / dt, 1),
            "from_disk_mb": round((_read_bytes() - disk0) / 2**20, 1)}


def _child(*args: str) -> dict:
    out = subprocess.run([PY, __file__, *args], check=True, cwd=ROOT, env=bench_env(),
                         stdout=subprocess.PIPE, text=True, timeout=1800).stdout
    return json.loads(out.strip().splitlines()[-1])


def part_a(rdir: Path, reps: int, tokens: int) -> dict:
    names = list(CONFIGS)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    disks = []
    for rep in range(reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            log(f"streaming A rep {rep + 1}/{reps}: {name}")
            runs[name].append(_child("--one", name, "--rank-dir", str(rdir),
                                     "--tokens", str(tokens)))
        disks.append(_child("--disk", "--rank-dir", str(rdir)))
    return {"runs": runs, "disk": disks}


def _cli(ranks: int, window: str, delay: float, tokens: int) -> dict:
    cmd = [PY, "-m", "core.cli", "generate", "--ranks", str(ranks), "--window", window,
           "--link-delay-ms", str(delay), "--max-new-tokens", str(tokens),
           "--prompt", CLI_PROMPT, "--json"]
    out = subprocess.run(cmd, check=True, cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, timeout=1800).stdout
    d = json.loads(out.strip().splitlines()[-1])
    return {"ms_per_token": d["decode_ms_per_token"], "peak_rss_mb": d["peak_rss_mb"],
            "tokens": d["token_ids"]}


def part_b(reps: int, tokens: int) -> dict:
    out: dict[str, list[dict]] = {}
    for rep in range(reps):
        for delay in LINK_DELAYS_MS:
            windows = ["all", "2"] if rep % 2 == 0 else ["2", "all"]
            for w in windows:
                log(f"streaming B rep {rep + 1}/{reps}: 2 ranks, delay {delay} ms, window {w}")
                out.setdefault(f"{delay:g} ms / {w}", []).append(_cli(2, w, delay, tokens))
    return out


def summarize(a: dict, b: dict) -> dict:
    med = {n: median([r["ms_per_token"] for r in rs]) for n, rs in a["runs"].items()}
    speed = median([d["mb_per_s"] for d in a["disk"]])
    cold_mb = median([r["streamed_mb_per_token"] for r in a["runs"]["cold w2"]])
    floor_ms = cold_mb / speed * 1000 if speed else None
    s = {"warm_ratio": round(med["warm w2"] / med["resident"], 2),
         "cold_vs_read_time": round(med["cold w2"] / floor_ms, 2) if floor_ms else None,
         "read_time_ms_per_token": round(floor_ms, 1) if floor_ms else None,
         "disk_mb_per_s": speed, "medians_ms": med,
         "spread": {n: spread([r["ms_per_token"] for r in rs]) for n, rs in a["runs"].items()}}
    for delay in LINK_DELAYS_MS:
        w2 = median([r["ms_per_token"] for r in b[f"{delay:g} ms / 2"]])
        full = median([r["ms_per_token"] for r in b[f"{delay:g} ms / all"]])
        s[f"link_{delay:g}ms_ratio"] = round(w2 / full, 2)
        s[f"link_{delay:g}ms_ms"] = {"w2": w2, "all": full}
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--one", choices=list(CONFIGS))
    ap.add_argument("--disk", action="store_true")
    ap.add_argument("--rank-dir", type=Path)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.rank_dir, args.one, args.tokens)))
        return 0
    if args.disk:
        print(json.dumps(disk_speed(args.rank_dir)))
        return 0
    start = machine()
    rdir = rank_dir()
    a = part_a(rdir, args.reps, args.tokens)
    b = part_b(args.reps, min(args.tokens, 24))
    data = {"machine": start, "reps": args.reps, "tokens": args.tokens, "part_a": a,
            "part_b": b, "summary": summarize(a, b), "load_avg_at_end": list(os.getloadavg())}
    write_json("streaming.json", data)
    log(f"streaming: {json.dumps(data['summary'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
