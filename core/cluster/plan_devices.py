"""Measure the devices answering and let the planner choose: what a Session runs (and what
`tpi-chat plan` prints) before anything is shipped.

    policy = PlanPolicy(forced={"mini-pc"})
    choice = plan_devices(model_dir, opts, master_budget, [(spec, link), ...], policy)

Every device is measured at once (its own cached numbers, or a measurement it runs now),
so devices that share cores, as emulated devices on one small machine do, measure the
speed they will have while they all compute; then each link is probed, one after another,
with nothing else running, and then sets of two or more workers are probed at once
(`measure_groups`): what answering together adds to a star's round trip.
"""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core.cluster.cost_model import Member
from core.cluster.measures import FORMATS, DeviceSpeed
from core.cluster.model_bytes import ModelBytes
from core.cluster.planner import Choice, Groups, choose
from core.cluster.speeds import group_extra_ms, link_speeds, local_speed, worker_speed
from core.cluster.worker_link import WorkerLink
from core.cluster.worker_spec import WorkerSpec
from core.comm.linkemu import LinkEmulation
from core.engine.options import RunOptions
from core.errors import TpiError
from core.model.cache import cache_dir
from core.model.config import load_config
from core.model.model_dir import model_hash
from core.progress import Progress
from core.shard.manifest import load_manifest
from core.shard.plan import make_plan
from core.shard.splitter import split_model

THIS_DEVICE = "This device"
MAX_GROUP_PROBES = 4  # up to this many workers, every set of 2+ is probed (11 sets at 4)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanPolicy:
    """How a Session picks its devices: by the planner (default), with `forced` device
    names always in; `fresh` re-measures every device first."""

    forced: frozenset[str] = field(default_factory=frozenset)
    fresh: bool = False


def model_bytes(model_dir: Path, opts: RunOptions, progress: Progress | None = None
                ) -> ModelBytes:
    """Weight bytes by format, from the one-rank split (cached; made here if missing)."""
    report = progress or (lambda stage, done, total: None)
    split = split_model(model_dir, make_plan(load_config(model_dir), [1.0]),
                        cache_dir() / "shards", opts.dtype, model_hash=model_hash(model_dir),
                        progress=lambda d, t: report("splitting model", d, t))
    return ModelBytes.from_manifest(load_manifest(split.rank_dirs[0]))


def emulation(opts: RunOptions) -> LinkEmulation | None:
    if opts.link_delay_ms or opts.link_mbps:
        return LinkEmulation(opts.link_delay_ms, opts.link_mbps)
    return None


def measure_members(master_budget: int, workers: list[tuple[WorkerSpec, WorkerLink]],
                    fresh: bool = False, progress: Progress | None = None,
                    formats: tuple[str, ...] = FORMATS, wait: bool = True
                    ) -> tuple[Member, list[Member]]:
    """This computer and every worker measured in parallel. Without `wait` (nothing to
    decide: every device is forced in), cached numbers or cautious defaults: measuring
    now would only slow the ranks starting."""
    report = progress or (lambda stage, done, total: None)
    report("measuring devices", 0, 1 + len(workers))

    def one_worker(pair: tuple[WorkerSpec, WorkerLink]) -> DeviceSpeed:
        # a device that cannot say (an old version, a measurement that failed or took too
        # long) is priced with cautious defaults rather than dropped
        return worker_speed(pair[1], fresh, formats, wait=wait) or DeviceSpeed.from_dict({})

    def mine() -> DeviceSpeed:
        try:
            return local_speed(fresh, formats, wait)
        except TpiError as e:  # a planner short of numbers must not keep the model away
            log.warning("%s; planning with cautious guesses for this device", e)
            return DeviceSpeed.from_dict({})

    with ThreadPoolExecutor(max_workers=1 + len(workers)) as pool:
        here = pool.submit(mine)
        speeds = list(pool.map(one_worker, workers))
        me = Member(THIS_DEVICE, here.result(), None, int(master_budget))
    # the links are probed once every measurement is over, one at a time: an echo that
    # waits behind a measurement child hogging a core (or behind the other probes'
    # threads in this process) measures that wait, not the link; on the 2-core test
    # machine such medians reached 1.1 ms against ~0.5 ms quiet
    links = link_speeds([link for _, link in workers])
    theirs = [Member(spec.name, speed, probed, int(spec.memory_budget))
              for (spec, _), speed, probed in zip(workers, speeds, links, strict=True)]
    report("measuring devices", 1 + len(workers), 1 + len(workers))
    return me, theirs


def measure_groups(workers: list[tuple[WorkerSpec, WorkerLink]]) -> Groups:
    """What each set of two or more workers adds to a round trip by answering together:
    every such set up to MAX_GROUP_PROBES workers, past that only all of them (the planner
    prices a set never probed as its smallest probed superset)."""
    if len(workers) < 2:
        return {}
    if len(workers) <= MAX_GROUP_PROBES:
        sets = [c for k in range(2, len(workers) + 1)
                for c in itertools.combinations(workers, k)]
    else:
        sets = [tuple(workers)]
    return {frozenset(spec.name for spec, _ in s): group_extra_ms([link for _, link in s])
            for s in sets}


def plan_devices(model_dir: Path, opts: RunOptions, master_budget: int,
                 workers: list[tuple[WorkerSpec, WorkerLink]], policy: PlanPolicy,
                 progress: Progress | None = None) -> Choice:
    """The planner's choice over this computer and `workers` (specs with their links)."""
    mb = model_bytes(model_dir, opts, progress)
    everyone = {w.name for w, _ in workers} <= policy.forced
    me, others = measure_members(master_budget, workers, policy.fresh, progress, mb.formats,
                                 wait=policy.fresh or not everyone)
    forced = policy.forced & {m.name for m in others}
    groups = measure_groups(workers)
    return choose(mb, me, others, forced, emulation(opts), opts.window, groups)
