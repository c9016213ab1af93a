"""`tpi-chat` command line: no arguments starts the app; subcommands run headless.

  tpi-chat                      the desktop app (a headless chat until the GUI is installed)
  tpi-chat chat                 interactive chat in the terminal
  tpi-chat generate --prompt T  one reply, streamed to stdout (--json for numbers)
  tpi-chat split                pre-split a model for a plan
  tpi-chat rank ...             internal: a local worker rank process
"""

from __future__ import annotations

import argparse
import sys

from core.errors import TpiError


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="Hugging Face model folder or .gguf file (default: embedded SmolLM2-135M)")
    p.add_argument("--ranks", type=int, default=1, help="ranks on this machine (default 1)")
    p.add_argument("--shares", default=None, help="relative share per rank, e.g. 3,1")
    p.add_argument("--window", default="all", help="resident blocks per rank, or 'all'")
    p.add_argument("--context", type=int, default=4096, help="context length in tokens")
    p.add_argument("--threads", type=int, default=None, help="torch threads per rank")
    p.add_argument("--link-delay-ms", type=float, default=0.0,
                   help="emulated latency added to every link (benchmarks)")
    p.add_argument("--link-mbps", type=float, default=None, help="emulated link bandwidth")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--system", default=None, help="system prompt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tpi-chat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")

    g = sub.add_parser("generate", help="generate one reply to --prompt")
    _model_args(g)
    _sampling_args(g)
    g.add_argument("--prompt", required=True)
    g.add_argument("--raw", action="store_true", help="do not apply the chat template")
    g.add_argument("--json", action="store_true", help="end with one JSON line of results")

    c = sub.add_parser("chat", help="interactive chat in the terminal")
    _model_args(c)
    _sampling_args(c)

    s = sub.add_parser("split", help="pre-split a model into per-rank block files")
    s.add_argument("--model", default=None)
    s.add_argument("--ranks", type=int, default=1)
    s.add_argument("--shares", default=None)

    r = sub.add_parser("rank", help=argparse.SUPPRESS)
    r.add_argument("--control", required=True)
    r.add_argument("--rank", type=int, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd is None:
            from core.cli_commands import run_app

            return run_app()
        if args.cmd == "rank":
            from core.engine.rank_process import main as rank_main

            return rank_main(args.control, args.rank)
        from core import cli_commands

        return getattr(cli_commands, f"cmd_{args.cmd}")(args)
    except TpiError as e:
        print(f"tpi-chat: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
