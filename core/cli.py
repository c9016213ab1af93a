"""`tpi-chat` command line, headless: the subcommands (app/launch.py is the console entry
point; it starts the window when there are no arguments and hands everything else here).

  tpi-chat                      (app/launch.py) the desktop app; here: the terminal chat
  tpi-chat chat                 interactive chat in the terminal
  tpi-chat generate --prompt T  one reply, streamed to stdout (--json for numbers)
  tpi-chat perplexity --text F  the model's perplexity on a text file, llama.cpp's method
  tpi-chat serve                an OpenAI-compatible HTTP API over the model, for other apps
  tpi-chat split                pre-split a model for a plan
  tpi-chat pair HOST:PORT --code NNN-NNN   pair a device (its worker shows the code)
  tpi-chat devices              the paired devices, and whether each answers now
  tpi-chat worker [--pair]      serve this device to a master (--pair: open pairing, show a code)
  tpi-chat rank ...             internal: a local worker rank process
  tpi-chat --self-test          check this installation on a tiny model, 1 vs 2 ranks
"""

from __future__ import annotations

import argparse
import sys

from core.engine.context_policy import DROP_OLDEST, OVERFLOW_POLICIES
from core.errors import TpiError


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="Hugging Face model folder or .gguf file (default: embedded SmolLM2-135M)")
    p.add_argument("--ranks", type=int, default=1, help="ranks on this machine (default 1)")
    p.add_argument("--shares", default=None, help="relative share per rank, e.g. 3,1")
    p.add_argument("--window", default="all",
                   help="resident blocks per rank, 'all', or 'auto' (fit each rank's budget)")
    p.add_argument("--prefetch", type=int, default=None,
                   help="streamed blocks loaded ahead of compute (default: as the window allows)")
    p.add_argument("--context", type=int, default=4096, help="context length in tokens")
    p.add_argument("--threads", type=int, default=None, help="torch threads per rank")
    p.add_argument("--link-delay-ms", type=float, default=0.0,
                   help="emulated latency added to every link (benchmarks)")
    p.add_argument("--link-mbps", type=float, default=None, help="emulated link bandwidth")
    p.add_argument("--devices", default="none",
                   help="paired devices to run on: all, none (default) or NAME[,NAME...]")
    p.add_argument("--force", default="none", metavar="all|NAME[,NAME...]",
                   help="devices of --devices to use even where the planner predicts the "
                        "model is faster without them")
    _data_dir_arg(p)
    _dtype_arg(p)


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="identity and paired devices (default: the app's, or $TPI_CHAT_DATA)")


def _dtype_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="auto",
                   choices=["auto", "fp32", "bf16", "fp16", "int8", "q8", "q4", "q8_0", "q4_0",
                            "q4_1", "gguf"],
                   help="weight format of the shards. auto (default): a GGUF keeps its own "
                        "quantization, a Hugging Face folder is fp32. int8: per-channel "
                        "scales; q8/q4: llama.cpp's Q8_0/Q4_1 blocks")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=256)
    # Greedy by default, as in the app: the default model's first token is a near-tie and
    # at 0.2-0.7 it often answers in French or invents a capital.
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--system", default=None, help="system prompt")


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speculate", default="auto", metavar="auto|off|K",
                   help="speculative decoding: a draft model on this computer proposes tokens "
                        "and the cluster checks several in one step. auto (default): on when "
                        "it pays (slow links), k adapting; off; or K draft tokens a step")
    p.add_argument("--draft", default="self", metavar="self|MODEL",
                   help="the draft model: self (default: this model quantized, on this "
                        "computer only) or a smaller model with the same tokenizer (folder "
                        "or .gguf)")


def _overflow_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context-overflow", default=DROP_OLDEST, choices=OVERFLOW_POLICIES,
                   help="when a conversation outgrows --context: drop-oldest (default) keeps "
                        "the system prompt and the latest turns, drop-middle also keeps the "
                        "first exchange, stop refuses to go on")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tpi-chat", description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true",
                        help="check this installation: a tiny model on 1 and 2 ranks, offline")
    sub = parser.add_subparsers(dest="cmd")

    g = sub.add_parser("generate", help="generate one reply to --prompt")
    _model_args(g)
    _sampling_args(g)
    _spec_args(g)
    g.add_argument("--prompt", required=True)
    g.add_argument("--raw", action="store_true", help="do not apply the chat template")
    g.add_argument("--json", action="store_true",
                   help="end with one JSON line of results (with speculative decoding: "
                        "accepted_per_step, draft_k, acceptance)")

    pl = sub.add_parser("plan", help="measure the devices and print the plan the model "
                                     "would run with, and its predicted speed")
    _model_args(pl)
    pl.add_argument("--fresh", action="store_true", help="measure every device again first")
    pl.add_argument("--json", action="store_true", help="one JSON line instead of text")

    pp = sub.add_parser("perplexity", help="perplexity of the model on a text file",
                        description="Perplexity as llama.cpp's llama-perplexity measures it: "
                        "the text cut into windows of --context tokens (default 512), the "
                        "second half of each window scored.")
    _model_args(pp)
    pp.set_defaults(context=512)  # here --context is the window, as llama-perplexity's -c
    pp.add_argument("--text", required=True, help="UTF-8 text file to score")
    pp.add_argument("--json", action="store_true", help="end with one JSON line of results")

    c = sub.add_parser("chat", help="interactive chat in the terminal")
    _model_args(c)
    _sampling_args(c)
    _spec_args(c)
    _overflow_arg(c)

    sv = sub.add_parser("serve", help="an OpenAI-compatible HTTP API over the model",
                        description="Serve the model to other programs over OpenAI's API "
                        "(/v1/chat/completions, /v1/completions, /v1/models), one reply at "
                        "a time, the others waiting in line.")
    _model_args(sv)
    _spec_args(sv)
    _overflow_arg(sv)
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this computer only; any "
                         "other needs --api-key)")
    sv.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free)")
    sv.add_argument("--api-key", default=None,
                    help="key clients must send as 'Authorization: Bearer KEY' (default: "
                         "$TPI_CHAT_API_KEY, else none)")
    sv.add_argument("--max-queue", type=int, default=16,
                    help="requests that may wait behind the running one (default 16); "
                         "more are refused with 503")
    sv.add_argument("--stream-interval-ms", type=float, default=50.0,
                    help="streamed text goes out at most this often, a few tokens a chunk "
                         "when tokens come faster (default 50; 0: every token its own "
                         "chunk)")

    s = sub.add_parser("split", help="pre-split a model into per-rank block files")
    s.add_argument("--model", default=None)
    s.add_argument("--ranks", type=int, default=1)
    s.add_argument("--shares", default=None)
    _dtype_arg(s)

    pr = sub.add_parser("pair", help="pair a device running `tpi-chat worker`")
    pr.add_argument("address", metavar="HOST:PORT", help="the address the worker prints")
    pr.add_argument("--code", required=True, help="the pairing code the worker shows")
    pr.add_argument("--budget", default=None, help="memory the model may use there (1GB)")
    _data_dir_arg(pr)

    d = sub.add_parser("devices", help="list the paired devices and whether they answer")
    _data_dir_arg(d)

    r = sub.add_parser("rank", help=argparse.SUPPRESS)
    r.add_argument("--control", required=True)
    r.add_argument("--rank", type=int, required=True)
    r.add_argument("--curve-stdin", action="store_true")

    w = sub.add_parser("worker", help="serve this device to a TPI Chat master (peer daemon)")
    w.add_argument("--name", default=None, help="device name shown to masters")
    w.add_argument("--host", default=None,
                   help="bind and advertise only on this address (default: all interfaces)")
    w.add_argument("--port", type=int, default=0, help="pairing/info port (default: any)")
    w.add_argument("--pair", nargs="?", type=float, const=5.0, default=None,
                   metavar="MINUTES",
                   help="open pairing for MINUTES (default 5) and show its code; while "
                        "this worker runs, P in its console does the same, and so does "
                        "`tpi-chat worker --pair` on this device when it already runs "
                        "(a service, say)")
    w.add_argument("--data-dir", default=None, help="identity, trusted masters and shards")
    w.add_argument("--memory-budget", default=None, help="memory offered to masters, e.g. 3GB")
    w.add_argument("--shard-quota", default=None,
                   help="disk each paired master's shards may take, e.g. 40GB (default: "
                        "half of the disk; its least recently used shards make room)")
    w.add_argument("--masters", action="store_true", help="list the paired masters and exit")
    w.add_argument("--unpair", metavar="NAME|FINGERPRINT|all", default=None,
                   help="forget a paired master (it is refused from its next connect) and exit")
    svc = w.add_mutually_exclusive_group()
    svc.add_argument("--install-service", action="store_true",
                     help="start this worker (with these options) at every boot, no login "
                          "needed (systemd/launchd/Task Scheduler), and exit")
    svc.add_argument("--uninstall-service", action="store_true",
                     help="stop and remove that boot service, and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.self_test:
            from core.selftest import main as self_test

            return self_test()
        if args.cmd is None:  # the window is app/launch.py's business, not core's
            args = build_parser().parse_args(["chat"])
        if args.cmd == "rank":
            from core.ranks.rank_process import main as rank_main

            return rank_main(args.control, args.rank, args.curve_stdin)
        if args.cmd == "worker":
            from core.worker import main as worker_main

            return worker_main(args)
        if args.cmd == "plan":
            from core.plan_cli import cmd_plan

            return cmd_plan(args)
        if args.cmd == "perplexity":
            from core.perplexity_cli import cmd_perplexity

            return cmd_perplexity(args)
        if args.cmd == "serve":
            from core.serve.cli import cmd_serve

            return cmd_serve(args)
        if args.cmd in ("pair", "devices"):
            from core.cluster import devices_cli

            return getattr(devices_cli, f"cmd_{args.cmd}")(args)
        from core import cli_commands

        return getattr(cli_commands, f"cmd_{args.cmd}")(args)
    except TpiError as e:
        print(f"tpi-chat: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
