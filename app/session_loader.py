"""Loading a model over this computer and the enrolled devices (core.cluster.session.Session).

Used by the engine thread instead of a bare LocalCluster when the user paired devices:

    session_loader(model, opts, progress, devices=[WorkerSpec fields...], on_status=rows_cb)

The identity is this computer's (`load_or_create(data_dir())`, the one the Add device
dialog pairs with). Shard shipping reports its stage as a core.progress.DeviceStage
(its `device` field names the card it belongs to). A device that does not
answer a ping is left out of the load (one switched-off laptop must not keep the model
from loading); its card shows it offline.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil

from app.engine_worker import LoadedModel, Progress, model_display_name, open_model
from core.engine.options import RunOptions

StatusListener = Callable[[list], None]
PROBE_TIMEOUT_S = 4.0  # CURVE handshake + ping; generous: a busy 2-core box needs >1.5 s


def master_budget(devices: list[dict[str, Any]]) -> int:
    """This computer's share weight: as much as the largest device budget, at most its free
    memory (so a small worker still gets a share instead of rounding down to nothing)."""
    free = int(psutil.virtual_memory().available)
    budgets = [int(d.get("memory_budget") or 0) for d in devices]
    return min(free, max(budgets)) if any(budgets) else free


def answering(specs: list, identity: Any) -> tuple[list, list]:
    """Split `specs` (WorkerSpec) into the devices answering a CURVE ping and the others
    (pinged in parallel, so switched-off devices cost PROBE_TIMEOUT_S once, not each)."""
    from core.cluster.worker_link import WorkerLink

    def answers(spec: Any) -> bool:
        link = WorkerLink(spec.name, spec.endpoint, spec.public_key, identity)
        try:
            return link.probe(PROBE_TIMEOUT_S)
        finally:
            link.close()

    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        ok = list(pool.map(answers, specs))
    return ([s for s, good in zip(specs, ok, strict=True) if good],
            [s for s, good in zip(specs, ok, strict=True) if not good])


def offline_rows(names: list[str]) -> list:
    """A DeviceStatus per device left out of the load."""
    from core.cluster.device_status import DeviceStatus

    return [DeviceStatus(n, state="offline", share="Did not answer when the model loaded; "
                         "it joins at the next load.") for n in names]


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
    progress("Contacting devices", 0, len(specs))
    specs, missing = answering(specs, identity)
    offline = [s.name for s in missing]
    budget = master_budget([d for d in devices if d["name"] not in offline])

    def push(rows: list) -> None:  # the session's status thread
        on_status(rows + offline_rows(offline))

    session = Session(model_dir, identity, specs, opts=opts,
                      local_ranks=max(0, opts.ranks - 1), master_budget=budget,
                      progress=progress, on_status=push if on_status else None)
    session.start()
    return LoadedModel(
        name=model_display_name(model),
        world_size=session.world_size,
        close=session.close,
        tokenizer=tokenizer,
        runner=session.runner,
        device_status=lambda: session.device_status() + offline_rows(offline),
        current_world_size=lambda: session.world_size,
        recover=session.recover,
    )
