"""The multi-device flow from a script, on an emulated home network (needs root).

    sudo .venv/bin/python scripts/lan_demo.py [--model DIR_OR_GGUF] [--mbit 100]

This computer is the master (no app); two `tpi-chat worker`s run on devices of their own
(network namespaces on a bridge, tests/fixtures/home_lan.py), the first capped at --mbit.
The script then does what a user would:
1. `tpi-chat pair` both, `tpi-chat devices`;
2. `tpi-chat generate --devices all` and `--devices none`: the same greedy tokens?
3. `tpi-chat chat --devices all`: SIGKILL one device mid-reply (how long until the chat
   says so?), the next message on the rest, restart the device, the next message with it.
Prints one line per check and exits non-zero when one fails. Everything it made is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "What is the capital of France?"


def cli(data: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "TPI_CHAT_DATA": str(data), "PYTHONPATH": str(ROOT)}
    return subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "core.cli", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def check(ok: bool, what: str, failures: list[str]) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {what}", flush=True)
    if not ok:
        failures.append(what)


def main() -> int:
    from tests.fixtures import home_lan
    from tests.fixtures.cli import ChatProcess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    parser.add_argument("--mbit", type=float, default=100.0)
    args = parser.parse_args()
    why = home_lan.available()
    if why is not None:
        print(f"cannot emulate the network here: {why}", file=sys.stderr)
        return 2
    model = ["--model", args.model] if args.model else []
    gen = ["--prompt", PROMPT, "--max-new-tokens", "12", "--json", *model]
    tmp = Path(tempfile.mkdtemp(prefix="lan-demo-"))
    failures: list[str] = []
    with home_lan.HomeLan() as lan:
        devices = home_lan.RemoteWorkers(lan)
        w1 = devices.start("mini-pc", tmp / "mini-pc", "2GB", mbit=args.mbit)
        w2 = devices.start("board", tmp / "board", "2GB")
        master = tmp / "master"
        for w in (w1, w2):
            # the workers started with `tpi-chat worker --pair`: pairing open, a code shown
            r = cli(master, "pair", f"{w.host}:{w.port}", "--code", w.current_code())
            check(r.returncode == 0, f"pair {w.name}: {r.stdout.strip() or r.stderr}",
                  failures)
        r = cli(master, "devices")
        print(r.stdout, end="")
        alone = cli(master, "generate", *gen, "--devices", "none")
        spread = cli(master, "generate", *gen, "--devices", "all", "--force", "all")
        a = json.loads(alone.stdout.strip().splitlines()[-1]) if alone.returncode == 0 else {}
        b = json.loads(spread.stdout.strip().splitlines()[-1]) if spread.returncode == 0 else {}
        check(b.get("ranks") == 3, f"generate --devices all ran on {b.get('ranks')} ranks "
              f"({b.get('decode_ms_per_token')} ms/token)", failures)
        check(bool(a) and a.get("token_ids") == b.get("token_ids"),
              f"same greedy tokens as one rank: {b.get('text', spread.stderr)!r}", failures)

        chat = ChatProcess(master, *model, "--devices", "all", "--force", "all",
                           "--max-new-tokens", "200", "--link-delay-ms", "5")
        try:
            chat.wait_for(r"Empty line, /quit", timeout=900)
            chat.wait_for(r"\d ranks?\]", chat.say("Hello!"), timeout=300)
            mark = chat.say("Tell me a long story about a lighthouse.")
            chat.wait_for(r"bot> [^\n]*\S", mark, timeout=300)
            w2.kill()
            t0 = time.monotonic()
            m = chat.wait_for(r"\[device 'board' stopped answering[^\]]*\]", mark, timeout=60)
            dt = time.monotonic() - t0
            check(dt < 3.0, f"a clear message {dt:.2f} s after SIGKILL: {m[0][:90]}...",
                  failures)
            ranks = chat.wait_for(r"(\d) ranks?\]", chat.say("Are you still there?"),
                                  timeout=300)[1]
            check(ranks == "2", f"the next message answered on {ranks} ranks", failures)
            w2 = devices.start("board", tmp / "board", "2GB", pair=False)  # rebooted
            seen = []
            while "3" not in seen and len(seen) < 10:
                seen.append(chat.wait_for(r"(\d) ranks?\]", chat.say("And now?"),
                                          timeout=300)[1])
            check(seen[-1] == "3", f"restarted, it rejoins: ranks per message {seen}",
                  failures)
        finally:
            chat.close()
            w1.stop()
            w2.stop()
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
