"""Loading a model over this computer and the enrolled devices (core.cluster.session.Session).

Used by the engine thread instead of a bare LocalCluster when the user paired devices:

    session_loader(model, opts, progress, devices=[WorkerSpec fields...], on_status=rows_cb)

The identity is this computer's (`load_or_create(data_dir())`, the one the Add device
dialog pairs with). Shard shipping reports its stage as a core.progress.DeviceStage
(its `device` field names the card it belongs to). The Session pings the devices first:
one that does not answer is left out of the load (one switched-off laptop must not keep
the model from loading) and its status row, so its card, shows it offline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil

from app.engine_worker import LoadedModel, Progress, model_display_name, open_model
from core.engine.options import RunOptions

StatusListener = Callable[[list], None]


def master_budget(devices: list[dict[str, Any]]) -> int:
    """This computer's share weight: as much as the largest device budget, at most its free
    memory (so a small worker still gets a share instead of rounding down to nothing)."""
    free = int(psutil.virtual_memory().available)
    budgets = [int(d.get("memory_budget") or 0) for d in devices]
    return min(free, max(budgets)) if any(budgets) else free


def session_loader(model: str | None, opts: RunOptions, progress: Progress,
                   devices: list[dict[str, Any]],
                   on_status: StatusListener | None = None) -> LoadedModel:
    """resolve_model + tokenizer + a Session over this computer and `devices` (ranks =
    1 + opts.ranks - 1 local extras + one per device)."""
    from app.store import data_dir
    from core.cluster.identity import load_or_create
    from core.cluster.session import Session, WorkerSpec

    model_dir, tokenizer = open_model(model, progress)
    specs = [WorkerSpec(str(d["name"]), str(d["endpoint"]), str(d["public_key"]),
                        int(d.get("memory_budget") or 0) or 2**30) for d in devices]
    identity = load_or_create(data_dir())

    def budget(answering: list[WorkerSpec]) -> int:  # the devices that answered the ping
        names = {s.name for s in answering}
        return master_budget([d for d in devices if d["name"] in names])

    session = Session(model_dir, identity, specs, opts=opts,
                      local_ranks=max(0, opts.ranks - 1), master_budget=budget,
                      progress=progress, on_status=on_status)
    session.start()
    return LoadedModel(
        name=model_display_name(model),
        world_size=session.world_size,
        close=session.close,
        tokenizer=tokenizer,
        runner=session.runner,
        device_status=session.device_status,
        current_world_size=lambda: session.world_size,
        recover=session.recover,
    )
