"""Opening a model for chat: the one way the command line and the app load a model.

    model_dir, tokenizer = open_model(None, progress)      # GGUF import, tokenizer
    runner = start_cluster(model_dir, opts, specs, progress=progress)
    ChatSession(tokenizer, runner)

`start_cluster` runs a plain LocalCluster when no device takes part, else a cluster
Session over this computer and the devices (core/cluster/session.py), with this
computer's memory budget chosen by `master_budget`. Both runners have step(), max_seq,
world_size, window_label, refresh_stats() and close().
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil

from core.cluster.device_status import DeviceStatus
from core.cluster.identity import default_data_dir, load_or_create
from core.cluster.plan_devices import PlanPolicy
from core.cluster.session import Session
from core.cluster.worker_spec import WorkerSpec
from core.engine.options import RunOptions
from core.model.model_dir import resolve_model
from core.model.tokenizer import ChatTokenizer
from core.progress import Progress
from core.ranks.local_cluster import LocalCluster

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def model_display_name(model: str | None) -> str:
    if model is None:
        return DEFAULT_MODEL_NAME
    p = Path(model)
    return p.stem if p.suffix.lower() == ".gguf" else p.name


def open_model(model: str | None, progress: Progress) -> tuple[Path, ChatTokenizer]:
    """(model_dir, ChatTokenizer): GGUF import or HF dir lookup, with progress."""
    model_dir = resolve_model(model, lambda d, t: progress("Importing model", d, t))
    progress("Loading tokenizer", 0, 1)
    tokenizer = ChatTokenizer(model_dir)
    progress("Loading tokenizer", 1, 1)  # a finished bar ends its line: what follows starts
    return model_dir, tokenizer  # on its own (an error, or the next stage's bar)


def master_budget(devices: list[WorkerSpec]) -> int:
    """This computer's share weight: as much as the largest device budget, at most its free
    memory (so a small device still gets a share instead of rounding down to nothing)."""
    free = int(psutil.virtual_memory().available)
    budgets = [int(d.memory_budget) for d in devices]
    return min(free, max(budgets)) if any(budgets) else free


def start_cluster(model_dir: Path, opts: RunOptions, devices: list[WorkerSpec], *,
                  data_dir: Path | None = None, progress: Progress | None = None,
                  on_status: Callable[[list[DeviceStatus]], None] | None = None
                  ) -> LocalCluster | Session:
    """This computer (plus opts.ranks - 1 local rank processes) and `devices`, started.

    With devices, the identity is this computer's (the one `tpi-chat pair` and the app's
    Add device pair with); devices that do not answer or cannot start are left out, and
    so are those the planner predicts only slow the model down (unless `forced`)."""
    if not devices:
        return LocalCluster(model_dir, opts, progress=progress).start()
    identity = load_or_create(data_dir or default_data_dir())
    session = Session(model_dir, identity, devices, opts=opts,
                      local_ranks=max(0, opts.ranks - 1), master_budget=master_budget,
                      progress=progress, on_status=on_status,
                      policy=PlanPolicy(frozenset(d.name for d in devices if d.forced)))
    return session.start()
