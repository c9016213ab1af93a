"""The API's cost over the engine: `tpi-chat serve` vs `tpi-chat generate` on the default model.

    .venv/bin/python benchmarks/bench_serve.py [--reps 5] [--new-tokens 64] [--ranks 1]

Engine: the model opened in this process as `tpi-chat generate` opens it (open_for,
start_for), one warm-up reply, then per repetition a fresh ChatSession's reply: the
engine-measured time to first token and decode tokens/s, as `generate --json` reports
them. API: one `tpi-chat serve` process, one warm-up reply, then the openai client
streaming the same greedy request (text at most every 50 ms, serve's default; a second
server sending a chunk per token, --stream-interval-ms 0, is measured beside it for
reference): time to first token from sending the request to the
first chunk with text, streamed tokens/s from the first to the last text chunk
(usage's completion_tokens - 1 intervals). Engine and API repetitions alternate, so both
see the same load. Every repetition's system prompt differs at its start, so the
server's KV reuse cannot skip the prefill the engine pays. The engine's replies run on the
thread that loaded the model, as in `generate` and `serve` (core/serve/engine_worker.py:
a second thread stepping the model gives libgomp a second OpenMP team, and then every
team sleeps between parallel regions, at about half the speed on 2 cores; --thread
measures that). On a loaded machine the spinning teams of this default lose far more to
other processes than sleeping ones do: run it quiet.
`--cli-reps N` adds N fresh `tpi-chat generate` processes (a process's first reply pays
its cold start). Medians printed, and written to benchmarks/out/serve.json, which
benchmarks/serve_report.py renders in RESULTS.md (`make bench BENCH_ARGS="--only serve"`).
Issue 16's targets (serve_report.py): TTFT <= 1.1 x the engine's + 5 ms, streamed
tokens/s >= 0.95 x.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import PY, ROOT, bench_env, log, machine, median, write_json  # noqa: E402
from serve_report import tps_limit, ttft_limit  # noqa: E402

QUESTION = "What is the capital of France? Tell me about it."
MODEL = "SmolLM2-135M-Instruct"


def _system(rep: int) -> str:
    return f"Conversation {rep}. You are a helpful assistant."


class Engine:
    """The default model in this process, opened as `tpi-chat generate` opens it."""

    def __init__(self, args):
        from core.cli import build_parser
        from core.cli_commands import open_for, start_for

        gen_args = build_parser().parse_args(["generate", "--prompt", QUESTION, "--ranks",
                                              str(args.ranks)])
        model_dir, self.tokenizer = open_for(gen_args)
        self.cluster = start_for(gen_args, model_dir)

    def run(self, rep: int, args) -> dict:
        """One reply on the thread that loaded the model (--thread: on another one)."""
        if not args.thread:
            return self._reply(rep, args)
        from concurrent.futures import ThreadPoolExecutor

        if not hasattr(self, "_thread"):
            self._thread = ThreadPoolExecutor(1)
        return self._thread.submit(self._reply, rep, args).result()

    def _reply(self, rep: int, args) -> dict:
        from core.engine.chat import ChatSession
        from core.engine.sampler import SamplingParams

        session = ChatSession(self.tokenizer, self.cluster, system=_system(rep))
        r = session.send(QUESTION, SamplingParams(temperature=0,
                                                  max_new_tokens=args.new_tokens)).result
        return {"ttft_ms": r.ttft_ms, "tokens_per_s": r.tokens_per_s,
                "tokens": len(r.token_ids)}


def cli_run(rep: int, args) -> dict:
    p = subprocess.run([PY, "-m", "core.cli", "generate", "--prompt", QUESTION, "--system",
                        _system(rep), "--temperature", "0", "--max-new-tokens",
                        str(args.new_tokens), "--ranks", str(args.ranks), "--json"],
                       capture_output=True, text=True, env=bench_env(), cwd=ROOT, timeout=600)
    if p.returncode:
        raise SystemExit(f"generate failed: {p.stderr[-2000:]}")
    got = json.loads(p.stdout.strip().splitlines()[-1])
    return {"ttft_ms": got["ttft_ms"], "tokens_per_s": got["tokens_per_s"],
            "tokens": len(got["token_ids"])}


class Server:
    def __init__(self, args, interval_ms: float | None = None):
        self.err = tempfile.NamedTemporaryFile("w+", suffix=".log")
        interval = [] if interval_ms is None else ["--stream-interval-ms", str(interval_ms)]
        self.proc = subprocess.Popen(
            [PY, "-m", "core.cli", "serve", "--port", "0", "--ranks", str(args.ranks),
             *interval],
            stdout=subprocess.PIPE, stderr=self.err, text=True, env=bench_env(), cwd=ROOT)
        found: list[str] = []

        def read() -> None:
            for line in self.proc.stdout:
                if m := re.search(r"at (http://\S+/v1)", line):
                    found.append(m.group(1))
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(600)
        if not found:
            self.close()
            raise SystemExit(f"serve did not start: {Path(self.err.name).read_text()[-2000:]}")
        self.api = found[0]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def api_run(client, rep: int, args) -> dict:
    t0 = time.perf_counter()
    times, usage = [], None  # times: when each chunk with text came
    for c in client.chat.completions.create(
            model=MODEL, temperature=0, max_tokens=args.new_tokens, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "system", "content": _system(rep)},
                      {"role": "user", "content": QUESTION}]):
        if c.choices and c.choices[0].delta.content:
            times.append(time.perf_counter())
        if c.usage:
            usage = c.usage
    n = usage.completion_tokens
    span = times[-1] - times[0]
    return {"ttft_ms": (times[0] - t0) * 1000, "tokens": n, "text_chunks": len(times),
            "tokens_per_s": (n - 1) / span if span > 0 else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cli-reps", type=int, default=0)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--thread", action="store_true",
                    help="run the engine's replies on a thread other than the one that "
                         "loaded the model (a second OpenMP team: both sleep between regions)")
    args = ap.parse_args()
    import os

    import openai

    os.environ.update(bench_env())  # the engine here shares the children's shard cache
    started = machine()  # the date, and the load before this run's processes add to it
    cli = []
    for rep in range(args.cli_reps):
        cli.append(cli_run(rep, args))
        log(f"cli {rep}: {cli[-1]}")
    # `serve` as it starts by default, and one sending every token as its own chunk
    # (--stream-interval-ms 0) for reference: what each chunk costs on this machine
    engine, server, each = Engine(args), Server(args), Server(args, 0)
    try:
        client = openai.OpenAI(base_url=server.api, api_key="none", max_retries=0)
        client0 = openai.OpenAI(base_url=each.api, api_key="none", max_retries=0)
        engine.run(-1, args)  # warm-up: a process's first reply pays extra
        api_run(client, -1, args)
        api_run(client0, -1, args)
        eng, api, api0, loads = [], [], [], []
        for rep in range(args.reps):
            eng.append(engine.run(rep, args))
            api.append(api_run(client, rep, args))
            api0.append(api_run(client0, rep, args))
            loads.append(round(os.getloadavg()[0], 2))
            log(f"{rep}: engine {eng[-1]}  api {api[-1]}  api, a chunk a token {api0[-1]}")
    finally:
        server.close()
        each.close()
        engine.cluster.close()
    keys = ("ttft_ms", "tokens_per_s")
    res = {"engine": {k: median([r[k] for r in eng]) for k in keys},
           "api": {k: median([r[k] for r in api]) for k in keys},
           "cli_fresh_process": {k: median([r[k] for r in cli]) for k in keys},
           "api_chunk_per_token": {k: median([r[k] for r in api0]) for k in keys},
           "text_chunks": median([r["text_chunks"] for r in api]),
           "runs": {"engine": eng, "api": api, "api_chunk_per_token": api0, "cli": cli},
           "load_per_rep": loads,
           "reps": args.reps, "new_tokens": args.new_tokens, "ranks": args.ranks,
           "engine_thread": "another thread" if args.thread else "the loading thread",
           "machine": started, "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}
    e, a = res["engine"], res["api"]
    t_lim, s_lim = ttft_limit(e["ttft_ms"]), tps_limit(e["tokens_per_s"])
    print(f"time to first token: API {a['ttft_ms']:.1f} ms, engine {e['ttft_ms']:.1f} ms "
          f"(target <= {t_lim:.1f} ms: {'met' if a['ttft_ms'] <= t_lim else 'MISSED'})")
    print(f"streamed tokens/s:   API {a['tokens_per_s']:.1f}, engine {e['tokens_per_s']:.1f} "
          f"(target >= {s_lim:.1f}: {'met' if a['tokens_per_s'] >= s_lim else 'MISSED'})")
    a0 = res["api_chunk_per_token"]
    print(f"  ({res['text_chunks']:.0f} text chunks a reply; with a chunk per token "
          f"(--stream-interval-ms 0): {a0['tokens_per_s']:.1f} tokens/s, "
          f"{a0['tokens_per_s'] / e['tokens_per_s']:.2f}x the engine's)")
    if cli:
        c = res["cli_fresh_process"]
        print(f"tpi-chat generate, fresh process: {c['ttft_ms']:.1f} ms to the first token, "
              f"{c['tokens_per_s']:.1f} tokens/s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    write_json("serve.json", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
