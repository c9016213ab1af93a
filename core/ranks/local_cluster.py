"""A cluster on this machine: rank 0 in this process plus ranks-1 local worker processes.

Plans the split, splits (cached), starts the workers (`tpi-chat rank`), hands each its
setup over the control channel, and keeps listening for their stats and errors.
Peer devices join through the same path: pass `hosts` (one RankHost per worker rank,
see core/ranks/rank_host.py; core/cluster/remote_rank.py ships and starts a rank on a
paired worker) plus `bind_host` and `curve` so every socket is CurveZMQ on the LAN.
Every socket is CurveZMQ even with no paired device (another user of this computer can
connect to loopback too): without `curve` the cluster makes an ephemeral server key.
Local rank processes get an ephemeral key pair (admitted for this cluster's lifetime)
over their stdin, and each rank's slot, on the control channel and the data plane, is
bound to the key of the process or device it was planned for. When every rank is a
local process, the control channel and the data plane's ZeroMQ sockets are Unix
sockets in a private directory (core/comm/local_socket.py): other users cannot connect,
and a message from another user would not count.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import torch

from core.comm import local_socket
from core.comm.codec import shown
from core.comm.control import BadMessage, ControlServer
from core.comm.curve import CurveServerConfig, Keys
from core.comm.endpoint import dialable
from core.comm.group import CommGroup
from core.comm.handshake import endpoints_for
from core.comm.linkemu import LinkEmulation
from core.engine.auto_window import rank_windows, window_label
from core.engine.head import Head
from core.engine.master import MasterRunner, SoloGroup
from core.engine.options import RunOptions
from core.engine.rank import RankRuntime
from core.engine.rank_stats import RankStats, collect
from core.errors import PeerError, ProtocolError, TpiError
from core.model.cache import cache_dir
from core.model.config import load_config
from core.model.model_dir import model_hash
from core.progress import Progress
from core.ranks.rank_host import LocalRankHost, RankHost
from core.ranks.rank_process import CONTROL_OPS
from core.ranks.rank_wire import shown_text, stats_from_wire
from core.shard.manifest import load_manifest
from core.shard.plan import make_plan
from core.shard.splitter import split_model

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0  # every rank loaded and ready (big shards take a while)
LAST_WORDS_S = 0.3  # how long a failed step waits for the failing rank's own error message
HELLO_TIMEOUT_S = 30.0  # a device's rank's first word: its process up, rank 0 reached


class LocalCluster:
    """Owns the ranks of one model on this machine (and the remote ranks it is handed).

    The constructor only records what to run; `start()` splits the model, starts the
    ranks and loads rank 0 (it returns self, so `LocalCluster(d, opts).start()` reads as
    one step), and `close()` undoes whatever part of that happened.
    """

    def __init__(self, model_dir: Path, opts: RunOptions, progress: Progress | None = None,
                 *, hosts: list[RankHost | None] | None = None, bind_host: str = "127.0.0.1",
                 curve: CurveServerConfig | None = None):
        if hosts is not None and len(hosts) != opts.ranks - 1:
            raise ValueError(f"{len(hosts)} rank hosts for {opts.ranks} ranks")
        self.model_dir = Path(model_dir)
        self.opts = opts
        self.world_size = opts.ranks
        self.bind_host = bind_host
        self._report = progress or (lambda stage, done, total: None)
        self._local_keys: set[str] = set()
        if curve is None:  # our own ranks only: an ephemeral server key, no other client
            curve = CurveServerConfig(Keys.generate(), lambda k: False)
        outer = curve.allow  # also admit the ephemeral keys of our own local ranks
        self.curve = CurveServerConfig(curve.identity,
                                       lambda k: k in self._local_keys or outer(k))
        self._logs = cache_dir() / "logs"
        # None = a local rank process (the default); else e.g. a rank on a paired worker
        self.hosts: list[RankHost] = [h if h is not None else self._local_host(r) for r, h in
                                      enumerate(hosts or [None] * (opts.ranks - 1), start=1)]
        # ranks sharing this machine's cores: rank 0, local processes, workers running here
        self.threads = opts.threads_per_rank(1 + sum(h.same_machine for h in self.hosts))
        self.rank_dirs: list = []
        self.windows: list = []
        self.window_label = ""
        self.started: list[RankHost] = []
        self.control: ControlServer | None = None
        self.group = None
        self.rank0: RankRuntime | None = None
        self._master: MasterRunner | None = None
        self.max_seq = 0
        self._listener: threading.Thread | None = None
        self._stats: dict[int, RankStats] = {}
        self._errors: dict[int, str] = {}
        self._error_seen = threading.Event()  # a worker's own last words arrived
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one step (or stats round) at a time
        self._idents: dict[int, bytes] = {}
        self._ipc_dir: str | None = None  # our sockets' private directory, if any
        self._noted = -1.0  # when a message we ignored was last logged

    def start(self) -> LocalCluster:
        """Split (cached), start every rank, load rank 0; on failure close and raise."""
        try:
            self._split()
            torch.set_num_threads(self.threads)
            self.group = self._make_group()
            if self.world_size > 1:
                self._start_workers(self._report)
            group = _ReportingGroup(self) if self.world_size > 1 else self.group
            self.rank0 = RankRuntime(self.rank_dirs[0], group, self.windows[0],
                                     self.opts.context, prefetch=self.opts.prefetch)
            if self.rank0.scheduler.keep_all:
                self.rank0.scheduler.wait_all_loaded(
                    lambda d, t: self._report("loading weights", d, t))
            self._master = MasterRunner(Head(self.rank_dirs[0], self.rank0.manifest),
                                        self.rank0, group)
            self.max_seq = self._master.max_seq
        except BaseException:
            self.close()
            raise
        return self

    def _split(self) -> None:
        opts = self.opts
        plan = make_plan(load_config(self.model_dir), opts.shares or [1.0] * opts.ranks)
        split = split_model(self.model_dir, plan, cache_dir() / "shards", opts.dtype,
                            model_hash=model_hash(self.model_dir),
                            progress=lambda d, t: self._report("splitting model", d, t))
        self.rank_dirs = split.rank_dirs
        for note in split.conversions:  # a GGUF type we do not run as is (Q6_K, say)
            log.info("weights converted: %s", note)
        self.windows = rank_windows(opts, [load_manifest(d) for d in self.rank_dirs])
        self.window_label = window_label(self.windows, opts.window == "auto")

    # --- start-up -----------------------------------------------------------------------

    def _local_host(self, rank: int) -> LocalRankHost:
        keys = Keys.generate()
        self._local_keys.add(keys.public_key)
        return LocalRankHost(self._logs, keys, self.curve.identity.public_key, rank)

    def host_name(self, rank: int) -> str:
        return "this device" if rank == 0 else self.hosts[rank - 1].name

    def _make_group(self):
        if self.world_size == 1:
            return SoloGroup()
        if all(h.peer_host is None for h in self.hosts) and local_socket.usable():
            self._ipc_dir = local_socket.private_dir()  # only our own processes, no TCP
        link = None
        if self.opts.link_delay_ms or self.opts.link_mbps:
            link = LinkEmulation(self.opts.link_delay_ms, self.opts.link_mbps)
        # star only: no worker-to-worker links, so devices need to reach this one alone
        return CommGroup.master(self.world_size, self.bind_host, link=link, curve=self.curve,
                                ring=False, rank_keys=self._rank_keys(),
                                ipc_dir=self._ipc_dir)

    def _rank_keys(self) -> dict[int, str]:
        """Worker rank -> the CURVE key its process connects with (the only one that may
        take its slot)."""
        return {r: h.public_key for r, h in enumerate(self.hosts, start=1)}

    def _start_workers(self, report: Progress) -> None:
        self.control = ControlServer(self.bind_host, ops=CONTROL_OPS, curve=self.curve,
                                     ipc_dir=self._ipc_dir)
        self._logs.mkdir(parents=True, exist_ok=True)
        for r, host in enumerate(self.hosts, start=1):
            self.started.append(host)
            try:
                control = dialable(self.control.endpoint, host.peer_host)
                host.start(r, control, Path(self.rank_dirs[r]), report)
            except OSError as e:  # e.g. no route to that device
                raise PeerError(f"{host.name} could not start rank {r}: {e}", [r]) from None
            except TpiError as e:  # shipping failed, or the worker refused run_rank
                raise PeerError(str(e), [r]) from None
        self._handshake(report)
        self._listener = threading.Thread(target=self._listen, name="control-listen",
                                          daemon=True)
        self._listener.start()

    def _setup_for(self, rank: int) -> dict:
        o = self.opts
        link = ({"delay_ms": o.link_delay_ms, "bandwidth_mbps": o.link_mbps}
                if o.link_delay_ms or o.link_mbps else None)
        return {"rank_dir": str(self.rank_dirs[rank]), "window": self.windows[rank],
                "prefetch": o.prefetch, "context": o.context,
                # 0: a peer device picks from its own cores
                "threads": self.threads if self.hosts[rank - 1].same_machine
                else (o.threads or 0),
                "world_size": self.world_size,
                "endpoints": endpoints_for(self.group.endpoints, self.hosts[rank - 1].peer_host),
                "link": link}

    def _handshake(self, report: Progress) -> None:
        """hello -> setup for every worker, the data plane joined, then ready from all."""
        need = set(range(1, self.world_size))
        greeted: set[int] = set()
        ready: set[int] = set()
        started = time.monotonic()
        deadline = started + START_TIMEOUT_S
        joined = False
        while ready != need:
            self._check_procs()
            if time.monotonic() > deadline:
                names = ", ".join(self.host_name(r) for r in sorted(need - ready))
                raise PeerError(f"{names} did not start within {START_TIMEOUT_S:g} s; see "
                                f"{self._logs}", sorted(need - ready))
            silent = sorted(r for r in need - greeted if self.hosts[r - 1].peer_host)
            if silent and time.monotonic() > started + HELLO_TIMEOUT_S:
                names = ", ".join(self.host_name(r) for r in silent)
                raise PeerError(f"{names} did not reach this computer within "
                                f"{HELLO_TIMEOUT_S:g} s of starting its rank (a firewall, or "
                                "an address this computer no longer has?)", silent)
            if greeted == need and not joined:
                self._join_data_plane()
                joined = True
            got = self._recv(0.1)
            if got is None:
                continue
            ident, msg = got
            known = self._rank_of(ident)
            if msg.op == "hello" and known == -1:
                rank = msg.meta.get("rank")
                if (isinstance(rank, int) and not isinstance(rank, bool) and rank in need
                        and rank not in greeted
                        and self.control.last_peer_key == self.hosts[rank - 1].public_key):
                    self._idents[rank] = ident
                    self.control.send(ident, "setup", self._setup_for(rank))
                    greeted.add(rank)
                else:  # not a rank, taken, or a key that rank was not planned for
                    log.warning("ignored a hello for rank %s during start-up", shown(rank))
            elif known == -1:
                continue  # not one of our ranks (yet): nothing it says counts
            elif msg.op == "error":
                raise PeerError(f"{self.host_name(known)} could not start: "
                                f"{shown_text(msg.meta.get('message'))}", [known])
            elif msg.op == "ready":
                try:
                    self._stats[known] = stats_from_wire(msg.meta, known)
                except ProtocolError as e:
                    raise PeerError(f"{self.host_name(known)} could not start: {e}",
                                    [known]) from None
                ready.add(known)
                report("starting ranks", len(ready), len(need))

    def _join_data_plane(self) -> None:
        """Wait for every worker on the data plane, but not on one that already died."""
        done = threading.Event()

        def watchdog() -> None:
            while not done.wait(0.2):
                if any(h.exit_reason() is not None for h in self.started):
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
        except BadMessage as e:  # not from one of our ranks, or garbled: ignore it
            self._note(f"ignored a malformed control message: {e}")
            return None

    def _note(self, why: str, exc: bool = False) -> None:
        """One log line about a message we ignored (at most one a second)."""
        now = time.monotonic()
        if exc or now - self._noted >= 1.0:
            self._noted = now
            log.warning("%s", why[:300], exc_info=exc)

    def _check_procs(self) -> None:
        for r, h in enumerate(self.started, start=1):
            why = h.exit_reason()
            if why is not None and r not in self._errors:
                self._errors[r] = why
                raise PeerError(f"{h.name} (rank {r}) stopped during start-up: {why}", [r])

    # --- running ------------------------------------------------------------------------

    def _listen(self) -> None:
        """Collect stats and errors that workers push; the GUI reads them, never blocks.
        Only our ranks count; whatever arrives, the listener logs it and goes on."""
        while not self._stop.is_set():
            try:
                self._listen_one()
            except Exception as e:  # never die silently: stats and errors would stop
                self._note(f"control listener: {type(e).__name__}: {e}", exc=True)
                self._stop.wait(0.2)

    def _listen_one(self) -> None:
        got = self._recv(0.2)
        if got is None:
            return
        ident, msg = got
        rank = self._rank_of(ident)
        if rank == -1:
            self._note(f"ignored {shown(msg.op)} from a peer that is not one of our ranks")
        elif msg.op == "stats":
            try:
                self._stats[rank] = stats_from_wire(msg.meta, rank)
            except ProtocolError as e:
                self._note(f"ignored stats from rank {rank}: {e}")
        elif msg.op == "error":
            self._errors[rank] = shown_text(msg.meta.get("message"))
            self._error_seen.set()

    @property
    def procs(self) -> list:
        """The Popen objects of the local rank processes (tests, benchmarks)."""
        return [h.proc for h in self.started if getattr(h, "proc", None) is not None]

    def step(self, ids: list[int], pos: int, all_logits: bool = False) -> torch.Tensor:
        """One forward step of the whole cluster; logits [V] of the last position, or
        [T, V] of every position with `all_logits`. A step at pos 0 starts afresh: it
        overwrites the KV cache from position 0 and attends to nothing older."""
        with self._lock:
            return self._master.step(ids, pos, all_logits)

    def rank_stats(self) -> list[RankStats]:
        """Latest numbers of every rank (rank 0 measured now, workers as last pushed)."""
        out = [collect(self.rank0, 0)] if self.rank0 is not None else []
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
        """Stop the workers (politely, then firmly) and free what start() made. Safe to
        repeat, and after a start() that failed half-way."""
        self._stop.set()
        if self.started and self.group is not None:
            try:
                self.group.broadcast_step({"op": "stop"}, None)
            except (TpiError, KeyError):  # KeyError: a rank that never connected (a
                pass  # start cancelled mid-ship); it is stopped through its host below
        for h in self.started:
            try:
                h.stop()
            except TpiError:
                pass  # a peer we cannot reach any more: its rank stops when our sockets close
        self.started = []
        if self.rank0 is not None:
            self.rank0.close()
        if self.group is not None:
            self.group.close()
        listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            listener.join(timeout=1.0)  # it polls the control socket we are about to close
        if self.control is not None:
            self.control.close()
            self.control = None
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
            self._ipc_dir = None


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
        self.c._error_seen.wait(LAST_WORDS_S)  # the worker's own last words, if it says any
        for r, msg in sorted(self.c._errors.items()):
            return PeerError(f"{self.c.host_name(r)} (rank {r}) failed: {msg}")
        for r, h in enumerate(self.c.started, start=1):
            why = h.exit_reason()
            if why is not None:
                return PeerError(f"{h.name} (rank {r}) stopped ({why}); the reply was cut "
                                 "short")
        return e
