"""Where a streamed token's CPU goes: `tpi-chat serve`'s threads and the openai client.

    .venv/bin/python benchmarks/profile_serve.py [--reps 3] [--new-tokens 64]

Starts `tpi-chat serve` on the default model, sends one warm-up and then --reps greedy
streamed requests with the official openai client (as bench_serve.py does), and prints per
generated token: each server thread's CPU time (/proc/PID/task/TID/schedstat) and its
voluntary context switches, and the client's own CPU time. CPU time and counts, not
wall-clock, so a loaded machine still gives usable numbers. The OpenMP threads are the two
with ~ms per token; their voluntary switches say whether libgomp throttled them (~190 a
token: they sleep between parallel regions) or lets them spin (~0.5: one team, as
`generate`). Writes nothing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import PY, ROOT, bench_env  # noqa: E402

QUESTION = "What is the capital of France? Tell me about it."
MODEL = "SmolLM2-135M-Instruct"


def threads(pid: int) -> dict[str, tuple[int, int]]:
    """tid -> (CPU ns, voluntary switches) of every thread of pid (Python 3.11 does not
    name its threads for the OS, so they are told apart by their numbers only)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns = int((task / "schedstat").read_text().split()[0])
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        vol = int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
        out[task.name] = (ns, vol)
    return out


def one_reply(client, rep: int, new_tokens: int) -> tuple[int, float]:
    """Completion tokens and streamed tokens/s of one request."""
    times, usage = [], None
    for c in client.chat.completions.create(
            model=MODEL, temperature=0, max_tokens=new_tokens, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "system", "content": f"Conversation {rep}. You are a "
                       "helpful assistant."}, {"role": "user", "content": QUESTION}]):
        if c.choices and c.choices[0].delta.content:
            times.append(time.perf_counter())
        if c.usage:
            usage = c.usage
    n = usage.completion_tokens
    span = times[-1] - times[0]
    return n, (n - 1) / span if span > 0 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    import openai

    err = tempfile.NamedTemporaryFile("w+", suffix=".log")
    proc = subprocess.Popen([PY, "-m", "core.cli", "serve", "--port", "0"], cwd=ROOT,
                            env=bench_env(), stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        api = None
        for line in proc.stdout:
            if m := re.search(r"at (http://\S+/v1)", line):
                api = m.group(1)
                break
        if api is None:
            raise SystemExit(f"serve did not start: {Path(err.name).read_text()[-2000:]}")
        client = openai.OpenAI(base_url=api, api_key="none", max_retries=0)
        one_reply(client, -1, args.new_tokens)
        print("per token: server threads as CPU us / voluntary switches, busiest first")
        for rep in range(args.reps):
            before, c0 = threads(proc.pid), time.thread_time()
            n, tps = one_reply(client, rep, args.new_tokens)
            client_us = (time.thread_time() - c0) / n * 1e6
            after = threads(proc.pid)
            rows = sorted(((ns - before.get(tid, (0, 0))[0]) / n / 1e3,
                           (vol - before.get(tid, (0, 0))[1]) / n)
                          for tid, (ns, vol) in after.items())
            shown = ", ".join(f"{us:.0f}/{vol:.1f}" for us, vol in reversed(rows) if us >= 1)
            print(f"{rep}: {tps:.1f} tokens/s; client {client_us:.0f} us; server {shown}")
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
