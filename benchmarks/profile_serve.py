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
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_serve import Server, api_run  # noqa: E402
from thread_counts import per_token, thread_counts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--ranks", type=int, default=1)
    args = ap.parse_args()
    import openai

    server = Server(args)  # as bench_serve.py starts it, and the same requests
    try:
        client = openai.OpenAI(base_url=server.api, api_key="none", max_retries=0)
        api_run(client, -1, args)
        print("per token: server threads as CPU us / voluntary switches, busiest first")
        for rep in range(args.reps):
            before, c0 = thread_counts(server.proc.pid), time.thread_time()
            got = api_run(client, rep, args)
            n = got["tokens"]
            client_us = (time.thread_time() - c0) / n * 1e6
            after = thread_counts(server.proc.pid)
            shown = ", ".join(f"{us:.0f}/{vol:.1f}"
                              for us, vol, _ in per_token(before, after, n) if us >= 1)
            print(f"{rep}: {got['tokens_per_s'] or 0:.1f} tokens/s; client {client_us:.0f} us; "
                  f"server {shown}")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
