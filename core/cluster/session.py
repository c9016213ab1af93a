"""A master's session: this device (rank 0, optional extra local ranks) + paired workers.

    s = Session(model_dir, identity, [WorkerSpec(...)], opts=RunOptions(context=512))
    s.start()                         # ping, plan by memory budgets, split, ship, run, load
    ChatSession(tok, s)               # s.step(ids, pos), like a LocalCluster
    s.device_status()                 # live rows for the Devices panel
    s.close()

start() first pings every worker (in parallel, core/cluster/worker_ping.py): one that does
not answer is left out of the plan, so a switched-off laptop does not keep the model from
loading, and device_status() shows it offline ("Did not answer ..."). A worker whose rank
cannot start (it cannot reach us, its rank process fails) is left out too, the plan made
again without it, and its row says why in the device's own words (state "failed"). A
left-out or dropped device that answers again rejoins at the start of the next reply.

Rank 0 binds loopback while every rank is on this machine, else all interfaces (`host`
overrides), and each rank is told our address on the route to its machine.

Every socket is CURVE (ZAP allow-list = the session's workers plus the ephemeral keys
of our own local ranks). A worker that dies or drops off mid-reply makes that step raise
PeerError naming the device (within ~1.5 s); the session
then re-plans over the devices still answering on the next step (or on `recover()`),
re-ships what the new plan needs and replays the conversation's tokens so the KV cache
matches again: the caller's conversation is untouched.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from core.cluster.device_status import DeviceStatus, link_note, speed_note, with_rank_stats
from core.cluster.plan_devices import PlanPolicy, plan_devices
from core.cluster.planner import Choice
from core.cluster.remote_rank import RemoteRankHost
from core.cluster.this_machine import on_this_machine
from core.cluster.worker_link import WorkerLink
from core.cluster.worker_ping import split_answering
from core.cluster.worker_spec import WorkerSpec
from core.comm.curve import CurveServerConfig, KeyPair
from core.comm.endpoint import host_of, wildcard_for
from core.engine.options import RunOptions
from core.errors import PeerError, TpiError
from core.progress import Progress
from core.ranks.local_cluster import LocalCluster

log = logging.getLogger(__name__)
STATUS_EVERY_S = 1.0
NOT_ANSWERED = "Did not answer when the model loaded; it joins at the next load."


MasterBudget = int | Callable[[list[WorkerSpec]], int]


class Session:
    """Ping -> plan -> ship -> run -> generate over this device and its paired workers.

    `master_budget`: bytes for this device (shared by its local ranks), or a rule giving
    them from the workers that answered the ping (called once, in start()); None or 0 =
    the memory available now.
    """

    def __init__(self, model_dir: Path, identity: KeyPair, workers: list[WorkerSpec], *,
                 opts: RunOptions | None = None, local_ranks: int = 0,
                 master_budget: MasterBudget | None = None, host: str | None = None,
                 progress: Progress | None = None,
                 on_status: Callable[[list[DeviceStatus]], None] | None = None,
                 policy: PlanPolicy | None = None):
        self.model_dir = Path(model_dir)
        self.identity = identity
        self.workers = list(workers)
        self.opts = opts or RunOptions()
        self.local_ranks = local_ranks
        self._budget_rule = master_budget
        self.master_budget = 0  # bytes; set by start() from the rule above
        self.host = host
        self.progress = progress
        self.on_status = on_status
        # None: every device answering takes part, shares by memory budget (tests);
        # else the planner measures them and picks (core/cluster/plan_devices.py)
        self.policy = policy
        self.choice: Choice | None = None
        self.links: dict[str, WorkerLink] = {}  # by public key, every worker (dead or not)
        self.silent: list[WorkerSpec] = []  # did not answer start()'s ping: left out
        self.failed: dict[str, str] = {}  # public key -> why its rank could not start
        self.cluster: LocalCluster | None = None
        self._members: list[WorkerSpec] = []  # workers in the current plan, by rank order
        self._allow = {w.public_key for w in self.workers}
        self._history: list[int] = []  # ids at positions 0.. fed to the model so far
        self._on_cluster = 0  # how many of them the current cluster's KV cache holds
        self._tps: float | None = None
        self._busy = False
        self._rejoin = False  # a device came back: re-plan at the next message
        self._stop = threading.Event()
        self._status_thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> Session:
        try:
            answering = self._contact_workers()
            self.master_budget = self._budget_for(answering)
            self._build()
        except BaseException:
            self.close()
            raise
        if self.on_status is not None:
            self._status_thread = threading.Thread(target=self._push_status,
                                                   name="session-status", daemon=True)
            self._status_thread.start()
        return self

    def preview(self) -> Choice | None:
        """The plan start() would run (devices measured, nothing shipped or started);
        None without a policy. Closes the links: a previewed session is not started."""
        try:
            answering = self._contact_workers()
            self.master_budget = self._budget_for(answering)
            self._choose(answering)
            return self.choice
        finally:
            self.close()

    def _contact_workers(self) -> list[WorkerSpec]:
        """Ping every worker; keep a link to each one answering (returned), note the rest."""
        n = len(self.workers)
        if self.progress is not None and n:
            self.progress("contacting devices", 0, n)
        answering, self.silent = split_answering(self.workers, self.identity)
        for w in self.workers:  # the silent ones too: their heartbeat notices a return
            self.links[w.public_key] = WorkerLink(
                w.name, w.endpoint, w.public_key, self.identity, on_dead=self._link_died,
                on_back=self._link_back, dead=None if w in answering else "did not answer")
        if self.progress is not None and n:
            self.progress("contacting devices", n, n)
        return answering

    def _budget_for(self, answering: list[WorkerSpec]) -> int:
        rule = self._budget_rule
        if callable(rule):
            return int(rule(answering))
        return int(rule) if rule else int(psutil.virtual_memory().available)

    def _alive(self) -> list[WorkerSpec]:
        return [w for w in self.workers
                if (link := self.links.get(w.public_key)) is not None and link.dead is None]

    def _build(self) -> None:
        """A plan over the devices answering. A device whose rank cannot start is left out
        (its card keeps the reason) and the plan is made again without it, down to this
        computer alone: a failing device never takes the model away."""
        while True:
            members = [w for w in self._alive() if w.public_key not in self.failed]
            members, shares = self._choose(members)
            try:
                return self._build_over(members, shares)
            except PeerError as e:
                blamed = [members[r - 1 - self.local_ranks] for r in e.ranks
                          if 0 < r - self.local_ranks <= len(members)]
                if not blamed:
                    raise
                for w in blamed:
                    self.failed[w.public_key] = str(e)
                    log.warning("left '%s' out of the plan: %s", w.name, e)

    def _bind_host(self, members: list[WorkerSpec]) -> str:
        """Loopback while every rank is on this machine; else all interfaces (CURVE and
        the allow-list guard them), each rank told our address on its own route."""
        if self.host is not None:
            return self.host
        away = [host_of(w.endpoint) for w in members if not on_this_machine(w.endpoint)]
        return wildcard_for(away) if away else "127.0.0.1"

    def _choose(self, members: list[WorkerSpec]) -> tuple[list[WorkerSpec], list[float] | None]:
        """The planner's members and shares (None: by memory budget, the plan without a
        policy, or with local ranks the planner does not price)."""
        self.choice = None
        if self.policy is None or self.local_ranks or not members:
            return members, None
        pairs = [(w, self.links[w.public_key]) for w in members]
        self.choice = plan_devices(self.model_dir, self.opts, self.master_budget, pairs,
                                   self.policy, self.progress)
        chosen = set(self.choice.names)
        for w in members:
            if w.name not in chosen:
                log.info("left '%s' out of the plan: %s", w.name,
                         self.choice.left_out.get(w.name, "it could not say its speeds"))
        return [w for w in members if w.name in chosen], list(self.choice.shares)

    def _build_over(self, members: list[WorkerSpec], shares: list[float] | None = None
                    ) -> None:
        n = 1 + self.local_ranks + len(members)
        if shares is None:
            shares = [float(self.master_budget)] * (1 + self.local_ranks)
            shares += [float(w.memory_budget) for w in members]
        # this device's budget is shared by its local ranks (the shares above only weigh)
        budgets = [self.master_budget // (1 + self.local_ranks)] * (1 + self.local_ranks)
        budgets += [int(w.memory_budget) for w in members]
        opts = dataclasses.replace(self.opts, ranks=n, shares=shares, budgets=budgets)
        hosts = [None] * self.local_ranks + [RemoteRankHost(self.links[w.public_key])
                                             for w in members]
        curve = CurveServerConfig(self.identity, self._allow.__contains__)
        self.cluster = LocalCluster(self.model_dir, opts, self.progress, hosts=hosts,
                                    bind_host=self._bind_host(members), curve=curve).start()
        self._members = members
        self._on_cluster = 0

    def recover(self) -> None:
        """Drop the current plan and start a new one over the devices answering now."""
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        for link in self.links.values():
            if link.dead is None:
                link.probe()
        self._build()

    def close(self) -> None:
        self._stop.set()
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        for link in self.links.values():
            link.close()

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generating ----------------------------------------------------------------

    @property
    def max_seq(self) -> int:
        if self.cluster is None:
            self.recover()
        return self.cluster.max_seq

    @property
    def world_size(self) -> int:
        return self.cluster.world_size if self.cluster else 0

    @property
    def window_label(self) -> str:
        return self.cluster.window_label if self.cluster else ""

    def refresh_stats(self, timeout: float = 5.0) -> list:
        """Fresh RankStats of every rank of the current plan (see LocalCluster)."""
        return self.cluster.refresh_stats(timeout) if self.cluster else []

    def step(self, ids: list[int], pos: int, all_logits: bool = False) -> torch.Tensor:
        """One forward step over the current plan (re-planned first after a failure);
        logits as LocalCluster.step gives them (`all_logits`: every position's)."""
        starts = starts_reply(len(ids), pos, len(self._history), all_logits)
        if self.cluster is None or (self._rejoin and starts):
            self._rejoin = False
            self.recover()
        del self._history[pos:]
        if pos > len(self._history):
            raise TpiError(f"step at position {pos} but only {len(self._history)} tokens known")
        self._history.extend(ids)
        self._busy = True
        t0 = time.perf_counter()
        try:
            if pos > self._on_cluster:  # a new plan: rebuild its KV cache from the history
                self.cluster.step(self._history[self._on_cluster:pos], self._on_cluster)
                self._on_cluster = pos
            self._on_cluster = min(self._on_cluster, pos)
            out = self.cluster.step(ids, pos, all_logits)
            self._on_cluster = pos + len(ids)
        except PeerError as e:
            del self._history[pos:]
            raise self._failed(e) from None
        finally:
            self._busy = False
        if len(ids) == 1:
            dt = time.perf_counter() - t0
            self._tps = 1 / dt if self._tps is None else 0.8 * self._tps + 0.2 / dt
        return out

    def _failed(self, e: PeerError) -> PeerError:
        """Name the device that failed; the next step re-plans without it."""
        blamed = [w.name for w in self._members if self.links[w.public_key].dead]
        if not blamed:
            for w in self._members:
                if not self.links[w.public_key].probe():
                    blamed.append(w.name)
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            threading.Thread(target=cluster.close, daemon=True).start()
        if blamed:
            who = ", ".join(f"'{n}'" for n in blamed)
            left = len(self._alive())
            on = ("this device alone" if left == 0 else f"this device and {left} other "
                  f"device{'s' if left > 1 else ''}")
            return PeerError(f"device {who} stopped answering, so the reply was cut short. "
                             f"The next message runs on {on}. ({e})")
        return PeerError(f"{e} The next message starts the devices again.")

    def _link_back(self, link: WorkerLink) -> None:
        """A device that was out answers again: it gets another chance at the next
        message (never in the middle of a reply)."""
        self.failed.pop(link.worker_key, None)
        self.silent = [w for w in self.silent if w.public_key != link.worker_key]
        if link.worker_key not in {w.public_key for w in self._members}:
            self._rejoin = True

    def _link_died(self, link: WorkerLink) -> None:
        """Heartbeat lost: interrupt a step waiting on that device (its group is done)."""
        c = self.cluster
        if c is not None and link.worker_key in {w.public_key for w in self._members}:
            c.group.close()

    # -- live view -----------------------------------------------------------------

    def device_status(self) -> list[DeviceStatus]:
        """One row per device of the plan, then one per worker outside it (offline: it
        left, or it did not answer start()'s ping)."""
        c = self.cluster
        stats = {s.rank: s for s in c.rank_stats()} if c is not None else {}
        total = sum(s.kv_heads for s in stats.values())
        rows: list[DeviceStatus] = []
        measured = {m.name: m for m in self.choice.members} if self.choice else {}
        names = (["This device"] + [f"Local rank {r}" for r in range(1, 1 + self.local_ranks)]
                 + [w.name for w in self._members])
        for rank, name in enumerate(names):
            s = stats.get(rank)
            link = self.links[self._members[rank - 1 - self.local_ranks].public_key] \
                if rank > self.local_ranks else None
            state = ("offline" if link is not None and link.dead else
                     "starting" if c is None or s is None else "busy" if self._busy else "ready")
            row = DeviceStatus(name=name, role="master" if rank == 0 else "worker",
                               state=state, tokens_per_s=self._tps,
                               rtt_ms=link.last_rtt_ms if link is not None else None)
            m = measured.get("This device" if rank == 0 else name)
            if m is not None:
                row.measured = speed_note(m.speed) + link_note(m.link)
            if rank == 0 and self.choice is not None:
                row.predicted_ms = self.choice.prediction.ms_per_token
            rows.append(with_rank_stats(row, s, total) if s is not None else row)
        for w in self.workers:
            if w in self._members:
                continue
            why = self.failed.get(w.public_key)
            spare = self.choice.left_out.get(w.name) if self.choice else None
            if why is None and spare is not None and self.links[w.public_key].dead is None:
                rows.append(DeviceStatus(name=w.name, state="standby",
                                         share=f"Not used: {spare}"))
            elif why is not None:
                rows.append(DeviceStatus(name=w.name, state="failed",
                                         share=f"Left out: {why}"))
            else:
                rows.append(DeviceStatus(name=w.name, state="offline",
                                         share=NOT_ANSWERED if w in self.silent else ""))
        return rows

    def _push_status(self) -> None:
        while not self._stop.wait(STATUS_EVERY_S):
            try:
                self.on_status(self.device_status())
            except Exception:  # the listener's bug must not stop the session
                pass


def starts_reply(n_ids: int, pos: int, known: int, all_logits: bool) -> bool:
    """Whether a step starts a reply, the moment to let a returned device in: one that
    does not extend the last (a decode step feeds one token at the end of the history).
    A step with every position's logits is a speculative check of drafted tokens inside a
    reply (or a perplexity window): never a re-plan in the middle of a reply."""
    return not all_logits and (n_ids > 1 or pos < known)
