"""`tpi-chat plan`: the devices measured, the plan the model would run with, its prediction.

Nothing is shipped or started: the workers are pinged, asked their speeds (cached on each
device) and probed (round trips, bandwidth); the planner prices every subset of them.
"""

from __future__ import annotations

import json
import sys
from argparse import Namespace

from core.cli_commands import _options, _stage_progress, devices_for
from core.cluster.device_status import link_note, speed_note
from core.cluster.devices_cli import data_dir_of
from core.cluster.identity import load_or_create
from core.cluster.open_model import master_budget, model_display_name
from core.cluster.plan_devices import (
    PlanPolicy,
    measure_members,
    model_bytes,
)
from core.cluster.planner import Choice, choose
from core.cluster.session import Session
from core.model.model_dir import resolve_model


def cmd_plan(args: Namespace) -> int:
    opts = _options(args)
    devices = devices_for(args)
    progress = _stage_progress()
    model_dir = resolve_model(args.model, lambda d, t: progress("Importing model", d, t))
    policy = PlanPolicy(frozenset(d.name for d in devices if d.forced), fresh=args.fresh)
    if devices:
        session = Session(model_dir, load_or_create(data_dir_of(args)), devices, opts=opts,
                          master_budget=master_budget, progress=progress, policy=policy)
        choice = session.preview()
        silent = [w.name for w in session.silent]
    else:
        mb = model_bytes(model_dir, opts, progress)
        me, _ = measure_members(master_budget([]), [], args.fresh, progress, mb.formats)
        choice = choose(mb, me, [], window=opts.window)
        silent = []
    assert choice is not None
    if args.json:
        print(json.dumps({"devices": choice.names, "shares": list(choice.shares),
                          "plan": choice.plan.to_dict(), "left_out": choice.left_out,
                          "silent": silent, "prediction": choice.prediction.to_dict(),
                          "measured": {m.name: m.to_dict() for m in choice.members}}))
    else:
        print_plan(model_display_name(args.model), choice, silent, opts.link_delay_ms)
    return 0


def print_plan(model: str, c: Choice, silent: list[str], delay_ms: float,
               out=sys.stdout) -> None:
    emu = f", {delay_ms:g} ms emulated on every link" if delay_ms else ""
    print(f"Plan for {model} on {len(c.members)} device{'s' if len(c.members) > 1 else ''}"
          f"{emu}:", file=out)
    for r, (m, share) in enumerate(zip(c.members, c.plan.ranks, strict=True)):
        window = c.prediction.windows[r]
        print(f"  rank {r}  {m.name}: {share.num_kv_heads} KV heads, {share.num_cols} MLP "
              f"columns, window {'all' if window is None else window}", file=out)
        print(f"          {speed_note(m.speed)}{link_note(m.link)}", file=out)
    for name, why in c.left_out.items():
        print(f"  not used  {name}: {why} (--force {name} uses it anyway)", file=out)
    for name in silent:
        print(f"  not used  {name}: did not answer", file=out)
    p = c.prediction
    print(f"Predicted: {p.ms_per_token:.1f} ms/token ({1000 / p.ms_per_token:.1f} tokens/s); "
          f"first token after ~{p.ttft_ms:.0f} ms for a {p.prompt_tokens}-token prompt", file=out)
    waits = f" (+{p.idle_ms:.1f} ms resuming after them)" if p.idle_ms >= 0.05 else ""
    print(f"  compute {p.compute_ms:.1f} ms, links {p.link_ms:.1f} ms{waits}, "
          f"disk {p.stream_ms:.1f} "
          f"ms a token{'' if p.fits else '; the shares do not all fit their memory budgets'}",
          file=out)
