"""What each `tpi-chat` subcommand does; argument parsing lives in core/cli.py."""

from __future__ import annotations

import json
import sys
import time
from argparse import Namespace
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from core.cluster.devices_cli import data_dir_of
from core.cluster.open_model import open_model, start_cluster
from core.cluster.roster import Roster
from core.cluster.session import Session
from core.cluster.ship_term import ShipTermLine
from core.cluster.transfer_rate import Clock
from core.cluster.worker_spec import WorkerSpec
from core.engine.chat import ChatSession
from core.engine.context_policy import ContextFull, ContextPolicy
from core.engine.generate import GenerationResult
from core.engine.options import RunOptions, parse_window
from core.engine.sampler import SamplingParams
from core.engine.speculative import Speculator
from core.errors import PeerError, TpiError
from core.model.model_dir import resolve_model
from core.model.tokenizer import ChatTokenizer
from core.progress import DeviceStage, Progress, TermProgress
from core.ranks.draft import start_speculator
from core.ranks.local_cluster import LocalCluster
from core.shard.layout import AUTO, parse_dtype
from core.shard.plan import parse_shares


def _options(args: Namespace) -> RunOptions:
    try:
        return RunOptions(
            ranks=args.ranks,
            shares=parse_shares(args.shares) if args.shares else None,
            window=parse_window(args.window),
            prefetch=args.prefetch,
            context=args.context,
            threads=args.threads,
            link_delay_ms=args.link_delay_ms,
            link_mbps=args.link_mbps,
            dtype=args.dtype,
            speculate=getattr(args, "speculate", "off"),
            draft=getattr(args, "draft", "self"),
        )
    except ValueError as e:
        raise TpiError(str(e)) from None


def _sampling(args: Namespace) -> SamplingParams:
    try:
        return SamplingParams(
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            repetition_penalty=args.repetition_penalty, seed=args.seed,
            max_new_tokens=args.max_new_tokens,
        )
    except ValueError as e:
        raise TpiError(str(e)) from None


def _start(args: Namespace) -> tuple[LocalCluster | Session, ChatTokenizer, Speculator | None]:
    """This computer, plus the paired devices --devices names (left out when they do
    not answer or cannot start: the run goes on without them), and the draft model."""
    model_dir, tokenizer = open_for(args)
    cluster = start_for(args, model_dir)
    try:
        return cluster, tokenizer, speculator_for(args, model_dir, tokenizer, cluster)
    except BaseException:
        cluster.close()
        raise


def speculator_for(args: Namespace, model_dir: Path, tokenizer: ChatTokenizer,
                   cluster: LocalCluster | Session) -> Speculator | None:
    """The draft model --speculate/--draft ask for. With `auto` a draft that cannot load
    is not fatal: the replies come without it (and a note says why)."""
    try:
        return start_speculator(model_dir, tokenizer, _options(args), cluster.world_size,
                                _stage_progress(), devices=not isinstance(cluster, LocalCluster))
    except TpiError as e:
        if args.speculate.strip().lower() != "auto":
            raise
        print(f"tpi-chat: speculative decoding off: {e}", file=sys.stderr)
        return None


def open_for(args: Namespace) -> tuple[Path, ChatTokenizer]:
    """--model opened (GGUF import, tokenizer), the options and --devices checked first;
    a command that vets the model before any rank starts calls this, then start_for."""
    _options(args)
    devices_for(args)
    return open_model(args.model, _stage_progress())


def devices_for(args: Namespace) -> list[WorkerSpec]:
    """The devices --devices names, those --force names marked forced."""
    devices = Roster(data_dir_of(args)).worker_specs(args.devices)
    wanted = getattr(args, "force", "none") or "none"
    if wanted.strip().lower() in ("", "none"):
        return devices
    names = ({d.name for d in devices} if wanted.strip().lower() == "all"
             else {n.strip() for n in wanted.split(",") if n.strip()})
    unknown = names - {d.name for d in devices}
    if unknown:
        raise TpiError(f"--force names {', '.join(sorted(unknown))}, not among --devices "
                       f"({args.devices})")
    return [replace(d, forced=d.name in names) for d in devices]


def start_for(args: Namespace, model_dir: Path) -> LocalCluster | Session:
    """The model in `model_dir` started on this computer and the devices --devices names."""
    opts = _options(args)
    data_dir = data_dir_of(args)
    devices = devices_for(args)
    cluster = start_cluster(model_dir, opts, devices, data_dir=data_dir,
                            progress=_stage_progress())
    if isinstance(cluster, Session):
        _say_left_out(cluster)
    return cluster


def _plan_json(cluster: LocalCluster | Session) -> dict:
    """The planner's devices and prediction, when a Session planned (`--json`)."""
    choice = getattr(cluster, "choice", None)
    if choice is None:
        return {}
    return {"devices": choice.names, "left_out": choice.left_out,
            "predicted_ms_per_token": round(choice.prediction.ms_per_token, 3),
            "predicted_ttft_ms": round(choice.prediction.ttft_ms, 1),
            # the terms and the numbers behind them, so a benchmark can re-predict
            "prediction": choice.prediction.to_dict(),
            "measured": {m.name: m.to_dict() for m in choice.members}}


def _say_left_out(session: Session) -> None:
    for w in session.silent:
        print(f"tpi-chat: '{w.name}' did not answer; running without it", file=sys.stderr)
    for w in session.workers:
        if w.public_key in session.failed:
            print(f"tpi-chat: '{w.name}' left out: {session.failed[w.public_key]}",
                  file=sys.stderr)
    for name, why in (session.choice.left_out.items() if session.choice else ()):
        print(f"tpi-chat: '{name}' not used: {why} (--force {name} uses it anyway)",
              file=sys.stderr)


def _stage_progress(stream: TextIO | None = None, clock: Clock = time.monotonic) -> Progress:
    """A bar per stage on stderr; shards going to a device get the device card's line
    ('mini-pc' [####    ] Shipping 412 / 980 MB · 11.3 MB/s · 50 s left)."""
    bars: dict[str, TermProgress | ShipTermLine] = {}
    current: TermProgress | ShipTermLine | None = None

    def report(stage: str, done: int, total: int) -> None:
        nonlocal current
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = (ShipTermLine(stage.device, stream, clock)
                                 if isinstance(stage, DeviceStage) else TermProgress(stage, stream))
        if current is not None and current is not bar:
            current.close()  # a stage left unfinished (a failed ship) keeps its own line
        current = bar
        bar(done, total)

    return report


def cmd_generate(args: Namespace) -> int:
    params = _sampling(args)
    cluster, tok, spec = _start(args)
    try:
        session = ChatSession(tok, cluster, system=args.system)
        session.generator.speculator = spec

        def show(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        send = session.complete_raw if args.raw else session.send
        reply = send(args.prompt, params, on_text=show)
        text, result = reply.text, reply.result
        sys.stdout.write("\n")
        if args.json:
            print(json.dumps({
                "text": text,
                "token_ids": result.token_ids,
                "prompt_tokens": result.prompt_tokens,
                "stop_reason": result.stop_reason,
                "ttft_ms": round(result.ttft_ms, 3),
                "decode_ms_per_token": round(result.decode_ms_per_token, 3),
                "tokens_per_s": round(result.tokens_per_s, 3),
                "ranks": cluster.world_size,
                "window": cluster.window_label,
                "peak_rss_mb": [round(s.peak_rss_mb, 1) for s in cluster.refresh_stats()],
                **_spec_json(result),
                **_plan_json(cluster),
            }))
        return 0
    finally:
        _close(cluster, spec)


def _spec_json(result: GenerationResult) -> dict:
    """What speculative decoding did in a reply: k and tokens kept per step."""
    acc = result.acceptance
    return {"draft_k": result.draft_k, "accepted_per_step": result.accepted_per_step,
            "acceptance": None if acc is None else round(acc, 4)}


def _close(cluster: LocalCluster | Session, spec: Speculator | None) -> None:
    try:
        cluster.close()
    finally:
        if spec is not None:
            spec.close()


QUIT_COMMANDS = ("/quit", "/exit", "/q")


def _ranks(cluster: LocalCluster | Session) -> str:
    return f"{cluster.world_size} rank{'s' if cluster.world_size != 1 else ''}"


def cmd_chat(args: Namespace) -> int:
    params = _sampling(args)
    cluster, tok, spec = _start(args)
    session = ChatSession(tok, cluster, system=args.system,
                          policy=ContextPolicy(args.context_overflow))
    session.generator.speculator = spec
    print(f"TPI Chat on {_ranks(cluster)}, context {cluster.max_seq} tokens"
          f"{context_note(args.context, cluster.max_seq)}. Empty line, /quit or Ctrl-D "
          "quits; /new starts a new chat.", flush=True)
    out_of_view = 0
    try:
        while True:
            try:
                text = input("\nyou> ").strip()
            except EOFError:
                break
            if not text or text in QUIT_COMMANDS:
                break
            if text == "/new":
                session.messages.clear()
                out_of_view = 0
                print("[a new chat]", flush=True)
                continue
            sys.stdout.write("bot> ")
            try:
                reply = session.send(text, params,
                                     on_text=lambda p: print(p, end="", flush=True))
            except ContextFull as e:  # the stop policy: the user decides what comes next
                print(f"\n[{e}; /new starts a new chat]", flush=True)
                continue
            except PeerError as e:  # a device dropped out: the conversation goes on
                print(f"\n[{e}]", flush=True)
                continue
            r = reply.result
            kept = "" if r.acceptance is None else f", {r.acceptance:.0%} of drafts kept"
            print(f"\n[{r.tokens_per_s:.1f} tokens/s, first token after {r.ttft_ms:.0f} ms"
                  f", {_ranks(cluster)}{kept}]", flush=True)  # devices come and go
            if len(reply.out_of_view) != out_of_view:
                out_of_view = len(reply.out_of_view)
                print(f"[{out_of_view_note(reply.out_of_view)}]", flush=True)
        return 0
    finally:
        _close(cluster, spec)


def context_note(asked: int, used: int) -> str:
    """Why the context is shorter than --context asked: the model's maximum."""
    return f" (the model's maximum; --context asked {asked})" if used < asked else ""


def out_of_view_note(out: range) -> str:
    """The terminal's marker: which earlier messages the model no longer sees."""
    n = len(out)
    which = "after the first exchange" if out.start else "earlier"
    return (f"{n} {which} message{'s are' if n != 1 else ' is'} out of the model's view "
            "from here on")


def cmd_split(args: Namespace) -> int:
    from core.shard.split_cli import run_split

    bar = TermProgress("importing model")
    model_dir = resolve_model(args.model, progress=bar)
    bar.close()
    shares = parse_shares(args.shares) if args.shares else [1.0] * args.ranks
    dtype = args.dtype if args.dtype == AUTO else parse_dtype(args.dtype)
    run_split(model_dir, shares, dtype=dtype)
    return 0

