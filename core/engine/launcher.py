"""A cluster on this machine: rank 0 in this process plus ranks-1 local worker processes.

Plans the split, splits (cached), starts the workers (`tpi-chat rank`), hands each its
setup over the control channel, and keeps listening for their stats and errors. Peer
devices will join through the same control/data protocol later.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from core.comm.control import BadMessage, ControlServer
from core.comm.group import CommGroup
from core.comm.linkemu import LinkEmulation
from core.engine.head import Head
from core.engine.master import MasterRunner, SoloGroup
from core.engine.options import RunOptions
from core.engine.rank import RankRuntime
from core.engine.rank_process import CONTROL_OPS
from core.engine.rank_stats import RankStats, collect
from core.errors import PeerError, TpiError
from core.model.cache import cache_dir
from core.model.config import load_config
from core.model.model_dir import model_hash
from core.shard.plan import make_plan
from core.shard.splitter import split_model

Progress = Callable[[str, int, int], None]
START_TIMEOUT_S = 120.0


def rank_command(control: str, rank: int) -> list[str]:
    """How to start a worker rank: the frozen app re-runs itself, else `python -m core.cli`."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "rank", "--control", control, "--rank", str(rank)]
    return [sys.executable, "-m", "core.cli", "rank", "--control", control, "--rank", str(rank)]


class LocalCluster:
    """Owns the ranks of one model on this machine; `runner` steps the whole cluster."""

    def __init__(self, model_dir: Path, opts: RunOptions, progress: Progress | None = None):
        self.opts = opts
        self.world_size = opts.ranks
        self.window_label = "all" if opts.window is None else str(opts.window)
        report = progress or (lambda stage, done, total: None)
        cfg = load_config(model_dir)
        plan = make_plan(cfg, opts.shares or [1.0] * opts.ranks)
        split = split_model(Path(model_dir), plan, cache_dir() / "shards",
                            model_hash=model_hash(model_dir),
                            progress=lambda d, t: report("splitting model", d, t))
        self.rank_dirs = split.rank_dirs
        self.procs: list[subprocess.Popen] = []
        self.control: ControlServer | None = None
        self._stats: dict[int, RankStats] = {}
        self._errors: dict[int, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one step (or stats round) at a time
        self._idents: dict[int, bytes] = {}
        torch.set_num_threads(opts.threads_per_rank())
        self.group = self._make_group()
        try:
            if self.world_size > 1:
                self._start_workers(report)
            group = _ReportingGroup(self) if self.world_size > 1 else self.group
            self.rank0 = RankRuntime(self.rank_dirs[0], group, opts.window, opts.context)
            if self.rank0.scheduler.keep_all:
                self.rank0.scheduler.wait_all_loaded(
                    lambda d, t: report("loading weights", d, t))
            self._master = MasterRunner(Head(self.rank_dirs[0], self.rank0.manifest),
                                        self.rank0, group)
            self.max_seq = self._master.max_seq
        except BaseException:
            self.close()
            raise

    # --- start-up -----------------------------------------------------------------------

    def _make_group(self):
        if self.world_size == 1:
            return SoloGroup()
        link = None
        if self.opts.link_delay_ms or self.opts.link_mbps:
            link = LinkEmulation(self.opts.link_delay_ms, self.opts.link_mbps)
        return CommGroup.master(self.world_size, link=link)

    def _start_workers(self, report: Progress) -> None:
        self.control = ControlServer(ops=CONTROL_OPS)
        self._logs = cache_dir() / "logs"
        self._logs.mkdir(parents=True, exist_ok=True)
        for r in range(1, self.world_size):
            log = open(self._logs / f"rank{r}.log", "wb")  # noqa: SIM115 (lives with the proc)
            self.procs.append(subprocess.Popen(rank_command(self.control.endpoint, r),
                                               stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        self._handshake(report)
        self._listener = threading.Thread(target=self._listen, name="control-listen",
                                          daemon=True)
        self._listener.start()

    def _setup_for(self, rank: int) -> dict:
        o = self.opts
        link = ({"delay_ms": o.link_delay_ms, "bandwidth_mbps": o.link_mbps}
                if o.link_delay_ms or o.link_mbps else None)
        return {"rank_dir": str(self.rank_dirs[rank]), "window": o.window, "context": o.context,
                "threads": o.threads_per_rank(), "world_size": self.world_size,
                "endpoints": self.group.endpoints, "link": link}

    def _handshake(self, report: Progress) -> None:
        """hello -> setup for every worker, the data plane joined, then ready from all."""
        need = set(range(1, self.world_size))
        greeted: set[int] = set()
        ready: set[int] = set()
        deadline = time.monotonic() + START_TIMEOUT_S
        joined = False
        while ready != need:
            self._check_procs()
            if time.monotonic() > deadline:
                raise PeerError(f"local ranks {sorted(need - ready)} did not start within "
                                f"{START_TIMEOUT_S:g} s; see {self._logs}")
            if greeted == need and not joined:
                self._join_data_plane()
                joined = True
            got = self._recv(0.1)
            if got is None:
                continue
            ident, msg = got
            rank = int(msg.meta.get("rank", -1)) if msg.op == "hello" else self._rank_of(ident)
            if msg.op == "hello" and rank in need:
                self._idents[rank] = ident
                self.control.send(ident, "setup", self._setup_for(rank))
                greeted.add(rank)
            elif msg.op == "error":
                raise TpiError(f"rank {rank} could not start: {msg.meta.get('message')}")
            elif msg.op == "ready":
                ready.add(rank)
                self._stats[rank] = RankStats.from_dict(msg.meta)
                report("starting ranks", len(ready), len(need))

    def _join_data_plane(self) -> None:
        """Wait for every worker on the data plane, but not on one that already died."""
        done = threading.Event()

        def watchdog() -> None:
            while not done.wait(0.2):
                if any(p.poll() is not None for p in self.procs):
                    self.group.close()  # interrupts wait_ready at once
                    return

        threading.Thread(target=watchdog, daemon=True).start()
        try:
            self.group.wait_ready(timeout=START_TIMEOUT_S)
        except PeerError:
            self._check_procs()
            raise
        finally:
            done.set()

    def _rank_of(self, ident: bytes) -> int:
        for r, i in self._idents.items():
            if i == ident:
                return r
        return -1

    def _recv(self, timeout: float):
        try:
            return self.control.recv(timeout=timeout)
        except BadMessage:
            return None  # not from one of our ranks, or garbled: ignore it

    def _check_procs(self) -> None:
        for r, p in enumerate(self.procs, start=1):
            code = p.poll()
            if code is not None and r not in self._errors:
                self._errors[r] = f"exited with code {code}"
                raise PeerError(f"local rank {r} exited with code {code} during start-up: "
                                f"{self._log_tail(r)}")

    def _log_tail(self, rank: int) -> str:
        try:
            lines = (self._logs / f"rank{rank}.log").read_text(errors="replace").strip()
            return lines.splitlines()[-1] if lines else "no output"
        except OSError:
            return "no log"

    # --- running ------------------------------------------------------------------------

    def _listen(self) -> None:
        """Collect stats and errors that workers push; the GUI reads them, never blocks."""
        while not self._stop.is_set():
            got = self._recv(0.2)
            if got is None:
                continue
            ident, msg = got
            rank = self._rank_of(ident)
            if msg.op == "stats":
                self._stats[rank] = RankStats.from_dict(msg.meta)
            elif msg.op == "error":
                self._errors[rank] = str(msg.meta.get("message"))

    @property
    def runner(self) -> LocalCluster:
        """What ChatSession/Generator drive: this cluster's step()."""
        return self

    def step(self, ids: list[int], pos: int, all_logits: bool = False) -> torch.Tensor:
        """One forward step of the whole cluster; logits of the last position."""
        with self._lock:
            return self._master.step(ids, pos, all_logits)

    def rank_stats(self) -> list[RankStats]:
        """Latest numbers of every rank (rank 0 measured now, workers as last pushed)."""
        out = [collect(self.rank0, 0)] if hasattr(self, "rank0") else []
        return out + [self._stats[r] for r in sorted(self._stats)]

    def refresh_stats(self, timeout: float = 5.0) -> list[RankStats]:
        """Ask every worker for fresh numbers (between steps) and wait for them."""
        if self.world_size > 1:
            with self._lock:
                before = {r: s for r, s in self._stats.items()}
                self.group.broadcast_step({"op": "stats"}, None)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and any(
                        self._stats.get(r) is before.get(r) for r in range(1, self.world_size)):
                    time.sleep(0.01)
        return self.rank_stats()

    def close(self) -> None:
        """Stop the workers (politely, then firmly) and free everything. Safe to repeat."""
        self._stop.set()
        if self.procs:
            try:
                self.group.broadcast_step({"op": "stop"}, None)
            except TpiError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        if hasattr(self, "rank0"):
            self.rank0.close()
        self.group.close()
        if self.control is not None:
            self.control.close()
            self.control = None


class _ReportingGroup:
    """The master's group, turning a dead or failing worker into a message a user can act on."""

    def __init__(self, cluster: LocalCluster):
        self.c = cluster
        self.world_size = cluster.world_size

    def allreduce_(self, t: torch.Tensor) -> torch.Tensor:
        try:
            return self.c.group.allreduce_(t)
        except PeerError as e:
            raise self._explain(e) from None

    def broadcast_step(self, meta: dict, t: torch.Tensor | None) -> None:
        try:
            self.c.group.broadcast_step(meta, t)
        except PeerError as e:
            raise self._explain(e) from None

    def _explain(self, e: PeerError) -> PeerError:
        time.sleep(0.3)  # let the listener pick up the worker's own last words
        for r, msg in sorted(self.c._errors.items()):
            return PeerError(f"rank {r} failed: {msg}")
        for r, p in enumerate(self.c.procs, start=1):
            if p.poll() is not None:
                return PeerError(f"rank {r} stopped (exit code {p.returncode}); the reply "
                                 "was cut short")
        return e
