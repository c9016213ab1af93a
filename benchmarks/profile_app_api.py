"""The desktop app's chat and its Local API server on one model: per token, each thread's CPU
and voluntary context switches (counts, usable on a loaded machine).

    .venv/bin/python benchmarks/profile_app_api.py [--new-tokens 64] [--rounds 2]

Runs the app's engine (app.engine.host.EngineHost, default_loader, the default model) in
this process without a window, turns the Local API server on, and alternates a chat
reply of the app with a streamed reply of the official openai client to the API, --rounds
times after a warm-up. Per reply it prints each busy thread's CPU us and voluntary
switches per generated token (/proc/self/task, as profile_serve.py), named where Python
knows the thread (tpi-engine: the app's engine thread; tpi-serve-*: the API server's;
client: the openai client) and "-" for the others (the OpenMP workers among them).
The OpenMP threads' switches say whether libgomp throttled them: ~190 a token when more
threads ran OpenMP regions than there are cores (they sleep between regions), ~0.5 when
one team spins (core/serve/engine_worker.py). Also prints which threads stepped the
model. Writes nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import bench_env  # noqa: E402
from thread_counts import per_token, thread_counts  # noqa: E402

QUESTION = "Tell me a long story about a dragon who learns to cook."


def names() -> dict[int, str]:
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id}


def rows(before: dict, after: dict, n: int) -> str:
    known = names()
    return ", ".join(f"{known.get(tid, '-')} {us:.0f}/{vol:.1f}"
                     for us, vol, tid in per_token(before, after, n) if us >= 20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", help="a model dir or GGUF (default: the default model)")
    args = ap.parse_args()
    os.environ.update(bench_env())
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import openai
    from PySide6.QtCore import QCoreApplication

    from app.engine.host import EngineHost
    from app.engine.worker import default_loader
    from core.cluster.open_model import model_display_name
    from core.engine.options import RunOptions
    from core.engine.sampler import SamplingParams

    qapp = QCoreApplication([])
    host = EngineHost(default_loader)
    done: dict = {}
    host.worker.ready.connect(lambda *a: done.setdefault("ready", a))
    host.worker.load_failed.connect(lambda e: done.setdefault("error", e))
    host.worker.finished.connect(lambda s: done.__setitem__("reply", s))
    host.worker.failed.connect(lambda e: done.setdefault("error", e))

    def wait(cond, timeout: float = 600.0) -> None:
        end = time.monotonic() + timeout
        while not cond():
            if "error" in done:
                raise SystemExit(done["error"])
            if time.monotonic() > end:
                raise SystemExit("timed out")
            qapp.processEvents()
            time.sleep(0.005)

    port = free_port()
    host.api.configure({"enabled": True, "port": port, "api_key": "", "lan": False})
    host.load(args.model, RunOptions())
    wait(lambda: "ready" in done and host.api.state.url)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                           max_retries=0)
    params = SamplingParams(temperature=0.0, max_new_tokens=args.new_tokens)

    def chat(rep: int) -> int:
        done.pop("reply", None)
        host.send([{"role": "user", "content": QUESTION}], f"Conversation {rep}.", params)
        wait(lambda: "reply" in done)
        return done["reply"].new_tokens

    def api(rep: int) -> int:
        out: dict = {}

        def run() -> None:
            threading.current_thread().name = "client"
            r = client.chat.completions.create(
                model=model_display_name(args.model), temperature=0, max_tokens=args.new_tokens,
                messages=[{"role": "system", "content": f"API conversation {rep}."},
                          {"role": "user", "content": QUESTION}])
            out["n"] = r.usage.completion_tokens

        t = threading.Thread(target=run, daemon=True)
        t.start()
        wait(lambda: not t.is_alive())
        return out["n"]

    chat(-1)  # warm-up, before the API ever ran a reply
    print("per generated token: thread CPU us/voluntary switches, busiest first")
    for rep in range(args.rounds):
        for what, fn in (("chat", chat), ("api", api)):
            before = thread_counts()
            n = fn(rep)
            print(f"{rep} {what:4} ({n} tokens): {rows(before, thread_counts(), n)}")
    before = thread_counts()
    n = chat(args.rounds)
    print(f"{args.rounds} chat ({n} tokens): {rows(before, thread_counts(), n)}")
    print("threads that stepped the model:",
          sorted(names().get(i, str(i)) for i in
                 {t.native_id for t in threading.enumerate()
                  if t.ident in host.worker.torch_thread_ids}))
    host.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
