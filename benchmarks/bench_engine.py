"""TTFT, decode ms/token and per-rank peak RSS: ours at 1-3 ranks x window all/2 vs transformers.

For each model (the default SmolLM2-135M-Instruct; a random 1.1B Llama built on the fly),
every repetition runs, one process at a time, transformers' fp32 greedy `generate`
(benchmarks/hf_reference.py, 2 torch threads) and then `tpi-chat generate --json` at each
ranks x window configuration; the order of our configurations rotates between repetitions
so slow drift in machine load spreads over all of them. Every process tree is sampled with
psutil (peak RSS per process, disk reads, major faults). Medians over repetitions; ratios
ours / transformers both of the medians and paired within a repetition.

    .venv/bin/python benchmarks/bench_engine.py [--quick] [--reps N] [--models default]

Writes benchmarks/out/engine.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PY, log, machine, median, run_watched, spread, write_json  # noqa: E402
from models import default_model, model_bytes, random_model  # noqa: E402

CHAT_PROMPT = ("Write a detailed essay about the history of the Roman Empire, from its "
               "founding to its fall.")
RAW_PROMPT = ("Once upon a time there was a little robot who liked to count the stars. "
              "Every night it climbed the hill behind the house.")
RANKS = (1, 2, 3)
WINDOWS = ("all", "2")


MODEL_NAMES = ("default", "llama-1b-random")


def model_specs(names: list[str], quick: bool, reps: int | None) -> list[dict]:
    """What to run per model. The 1B model runs fewer tokens to fit the time budget."""
    specs = []
    if "default" in names:
        specs.append(dict(name="default", dir=default_model(), prompt=CHAT_PROMPT, raw=False,
                          new_tokens=64, reps=reps or (1 if quick else 3)))
    if "llama-1b-random" in names and not quick:
        specs.append(dict(name="llama-1b-random", dir=random_model("llama-1b-random", log),
                          prompt=RAW_PROMPT, raw=True, new_tokens=32, reps=reps or 3))
    return specs


def _tpi(*args: str) -> list[str]:
    return [PY, "-m", "core.cli", *args]


def presplit(spec: dict, ranks: tuple[int, ...]) -> dict[int, float]:
    """Split the model for every rank count before timing anything; seconds per split."""
    took = {}
    for r in ranks:
        w = run_watched(_tpi("split", "--model", str(spec["dir"]), "--ranks", str(r)))
        took[r] = round(w.wall_s, 2)
    return took


def run_hf(spec: dict) -> dict:
    cmd = [PY, str(Path(__file__).with_name("hf_reference.py")), "--model", str(spec["dir"]),
           "--prompt", spec["prompt"], "--max-new-tokens", str(spec["new_tokens"])]
    w = run_watched(cmd + (["--raw"] if spec["raw"] else []))
    return {**w.last_json(), **w.io_summary()}


def run_ours(spec: dict, ranks: int, window: str) -> dict:
    cmd = _tpi("generate", "--model", str(spec["dir"]), "--prompt", spec["prompt"],
               "--ranks", str(ranks), "--window", window, "--temperature", "0",
               "--max-new-tokens", str(spec["new_tokens"]), "--json",
               "--speculate", "off")  # the engine itself (bench_speculative.py times drafts)
    w = run_watched(cmd + (["--raw"] if spec["raw"] else []))
    res = w.last_json()
    res.pop("text", None)
    return {"engine": "tpi", **res, **w.io_summary()}


def _label(ranks: int, window: str) -> str:
    return f"ours r{ranks} w{window}"


def bench_model(spec: dict) -> dict:
    """All repetitions of one model, then the summary."""
    log(f"{spec['name']}: pre-splitting for {RANKS} ranks")
    split_s = presplit(spec, RANKS)
    configs = [(r, w) for w in WINDOWS for r in RANKS]
    runs: list[dict] = []
    for rep in range(spec["reps"]):
        k = rep % len(configs)
        order = configs[k:] + configs[:k]
        log(f"{spec['name']} rep {rep + 1}/{spec['reps']}: transformers")
        runs.append({"rep": rep, "label": "transformers", **run_hf(spec)})
        for r, w in order:
            log(f"{spec['name']} rep {rep + 1}/{spec['reps']}: {_label(r, w)}")
            runs.append({"rep": rep, "label": _label(r, w), **run_ours(spec, r, w)})
    return {
        "model_dir": str(spec["dir"]), "model_gb": round(model_bytes(spec["dir"]) / 1e9, 2),
        "prompt": spec["prompt"], "raw": spec["raw"], "new_tokens": spec["new_tokens"],
        "reps": spec["reps"], "split_s": split_s, "runs": runs, "summary": summarise(runs),
    }


def summarise(runs: list[dict]) -> dict:
    """Per configuration: medians, spread, token match with transformers, ratios."""
    hf = {r["rep"]: r for r in runs if r["label"] == "transformers"}
    labels = list(dict.fromkeys(r["label"] for r in runs))
    out = {}
    for label in labels:
        rs = [r for r in runs if r["label"] == label]
        n_ranks = len(rs[0]["peak_rss_mb"])
        row = {
            "ttft_ms": median([r["ttft_ms"] for r in rs]),
            "decode_ms_per_token": median([r["decode_ms_per_token"] for r in rs]),
            "decode_spread": spread([r["decode_ms_per_token"] for r in rs]),
            "peak_rss_mb": [median([r["peak_rss_mb"][i] for r in rs]) for i in range(n_ranks)],
            "peak_rss_mb_sampled": [median([r["peak_rss_mb_per_process"][i] for r in rs])
                                    for i in range(n_ranks)],
            "sum_peak_rss_mb": median([r["sum_peak_rss_mb"] for r in rs]),
            "ru_majflt": median([r["ru_majflt"] for r in rs]),
            "ru_read_mb": median([r["ru_read_mb"] for r in rs]),
            "read_mb_sampled": median([r["read_mb_sampled"] for r in rs]),
            "tokens": len(rs[0]["token_ids"]),
            "match_hf": all(r["token_ids"] == hf[r["rep"]]["token_ids"] for r in rs),
        }
        if label == "transformers":
            row["ttft_warm_ms"] = median([r["ttft_warm_ms"] for r in rs])
        else:
            row["decode_vs_hf_paired"] = median(
                [r["decode_ms_per_token"] / hf[r["rep"]]["decode_ms_per_token"] for r in rs])
            row["ttft_vs_hf_paired"] = median([r["ttft_ms"] / hf[r["rep"]]["ttft_ms"] for r in rs])
        out[label] = row
    base = out["transformers"]
    for row in out.values():
        row["decode_vs_hf"] = _ratio(row["decode_ms_per_token"], base["decode_ms_per_token"])
        row["ttft_vs_hf"] = _ratio(row["ttft_ms"], base["ttft_ms"])
    for w in WINDOWS:
        one = out.get(_label(1, w))
        for r in RANKS[1:]:
            if one and _label(r, w) in out:
                out[_label(r, w)]["decode_vs_1rank"] = _ratio(
                    out[_label(r, w)]["decode_ms_per_token"], one["decode_ms_per_token"])
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="default model only, 1 repetition")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per model")
    ap.add_argument("--models", default=",".join(MODEL_NAMES),
                    help=f"comma-separated subset of {', '.join(MODEL_NAMES)}")
    args = ap.parse_args(argv)
    data = {"machine": machine(), "quick": args.quick, "models": {}}
    for spec in model_specs(args.models.split(","), args.quick, args.reps):
        data["models"][spec["name"]] = bench_model(spec)
        write_json("engine.json", data)  # partial results survive a later failure
    path = write_json("engine.json", data)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
