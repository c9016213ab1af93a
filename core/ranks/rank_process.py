"""A worker rank's process: join rank 0, load this rank's blocks, run steps until told to stop.

Started by rank 0 for local ranks (`tpi-chat rank --control EP --rank R --curve-stdin`);
the worker daemon on a peer device runs the same loop once its shards have been shipped.
The process first reads one JSON line from stdin (never argv or the environment, which
other users can see): {"public_key", "secret_key", "server_key"} for CURVE on the
control channel and data plane (always: loopback is open to every user of the machine),
plus optional "rank_dir" (overrides the master's path: a peer device has its own copy)
and "host" (address our ring link binds).
Control channel (DEALER, to rank 0): hello -> setup -> ready, then stats and error.
Data plane (CommGroup): step broadcasts and the two allreduces per layer.

Rank 0 is trusted less than our own code (on a worker device it is a paired master, not
us): its setup is checked field by field (`RankSetup.from_meta`) and every step before
it runs (`check_step`). A bad setup is answered `error {message}` and the rank exits 1;
a bad step is answered `error` and the rank waits for the next one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.comm import local_socket
from core.comm.broadcast import BadStep, StepTimeout
from core.comm.codec import shown
from core.comm.control import BadMessage, ControlClient
from core.comm.curve import CurveClientConfig, Keys
from core.comm.group import CommGroup
from core.comm.linkemu import LinkEmulation
from core.cpu import usable_cores
from core.engine.rank import RankRuntime
from core.engine.rank_stats import collect
from core.errors import PeerError, ProtocolError, TpiError

CONTROL_OPS = ("hello", "setup", "ready", "error", "stats", "bye")
SETUP_TIMEOUT_S = 60.0
STATS_EVERY_S = 0.5
MAX_WORLD = 256  # ranks in one group (as core/cluster/worker_protocol.MAX_RANK)
MAX_THREADS = 1024
MAX_CONTEXT = 1 << 24  # positions
_LINK_KEYS = frozenset({"delay_ms", "bandwidth_mbps"})


class _Reporter:
    """Sends to rank 0 from the main loop and the stats thread (one socket, one lock)."""

    def __init__(self, client: ControlClient):
        self.client = client
        self.lock = threading.Lock()

    def send(self, op: str, meta: dict) -> None:
        with self.lock:
            self.client.send(op, meta)


@dataclass(frozen=True)
class RankSecrets:
    """What a rank reads from stdin with --curve-stdin."""

    curve: CurveClientConfig
    rank_dir: Path | None = None
    host: str = "127.0.0.1"

    def to_json(self) -> str:
        k = self.curve.identity
        return json.dumps({"public_key": k.public_key, "secret_key": k.secret_key,
                           "server_key": self.curve.server_public_key,
                           "rank_dir": str(self.rank_dir) if self.rank_dir else None,
                           "host": self.host}) + "\n"

    @classmethod
    def read(cls, stream) -> RankSecrets:
        d = json.loads(stream.readline())
        curve = CurveClientConfig(Keys(d["public_key"], d["secret_key"]), d["server_key"])
        rd = d.get("rank_dir")
        return cls(curve, Path(rd) if rd else None, d.get("host") or "127.0.0.1")


def _int(meta: dict[str, Any], key: str, lo: int, hi: int, default: Any = ...) -> Any:
    v = meta.get(key, default)
    if v is None and default is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError(f"rank 0 sent a bad {key} {shown(v)} (want an integer in "
                            f"{lo}..{hi})")
    return v


def _link(v: object) -> LinkEmulation | None:
    if v is None:
        return None
    if (not isinstance(v, dict) or not set(v) <= _LINK_KEYS or not all(
            x is None or (isinstance(x, int | float) and not isinstance(x, bool)
                          and math.isfinite(x)) for x in v.values())):
        raise ProtocolError(f"rank 0 sent a bad link emulation {shown(v)}")
    try:
        return LinkEmulation(**v)
    except (TypeError, ValueError) as e:
        raise ProtocolError(f"rank 0 sent a bad link emulation: {e}") from None


@dataclass(frozen=True)
class RankSetup:
    """Rank 0's `setup` message, checked: any field out of shape is a ProtocolError."""

    threads: int  # 0: this device's own choice
    world_size: int
    endpoints: dict[str, Any]  # checked further by the data plane's join
    rank_dir: Path | None  # None with a rank_dir of our own (a peer device's copy)
    window: int | None
    context: int
    prefetch: int | None
    link: LinkEmulation | None

    @classmethod
    def from_meta(cls, meta: dict[str, Any], rank: int, own_rank_dir: bool) -> RankSetup:
        world = _int(meta, "world_size", 2, MAX_WORLD)
        if rank >= world:
            raise ProtocolError(f"rank 0 set up {world} ranks; this is rank {rank}")
        endpoints = meta.get("endpoints")
        if not isinstance(endpoints, dict):
            raise ProtocolError("rank 0 sent no data-plane endpoints")
        rank_dir = meta.get("rank_dir")
        if own_rank_dir:
            rank_dir = None
        elif not isinstance(rank_dir, str) or not rank_dir or "\0" in rank_dir:
            raise ProtocolError(f"rank 0 sent a bad rank_dir {shown(rank_dir)}")
        return cls(threads=_int(meta, "threads", 0, MAX_THREADS),
                   world_size=world, endpoints=endpoints,
                   rank_dir=Path(rank_dir) if rank_dir else None,
                   window=_int(meta, "window", 1, 1 << 20, None),
                   context=_int(meta, "context", 1, MAX_CONTEXT),
                   prefetch=_prefetch(meta), link=_link(meta.get("link")))


def check_step(meta: dict[str, Any], x: torch.Tensor | None, runtime: RankRuntime) -> int:
    """The position of a step rank 0 sent, after checking it fits this rank (x [T, D]
    float32 hidden states, 0 <= pos, pos + T within the context); ProtocolError if not."""
    pos = meta.get("pos")
    if not isinstance(pos, int) or isinstance(pos, bool) or pos < 0:
        raise ProtocolError(f"step position {shown(pos)} is not a non-negative integer")
    hidden = runtime.cfg.hidden_size
    if (x is None or x.dtype != torch.float32 or x.dim() != 2 or x.shape[0] < 1
            or x.shape[1] != hidden):
        got = "none" if x is None else f"{x.dtype} {list(x.shape)}"
        raise ProtocolError(f"step hidden states must be float32 [T, {hidden}], got {got}")
    if pos + x.shape[0] > runtime.max_seq:
        raise ProtocolError(f"step positions {pos}..{pos + x.shape[0]} exceed the context "
                            f"of {runtime.max_seq}")
    return pos


def main(control: str, rank: int, curve_stdin: bool = False) -> int:
    if not curve_stdin:  # no rank in the clear: anyone on loopback could play rank 0
        print(f"rank {rank}: start it with --curve-stdin and its keys on stdin",
              file=sys.stderr)
        return 2
    secrets = RankSecrets.read(sys.stdin)
    client = ControlClient(control, ops=CONTROL_OPS, curve=secrets.curve)
    try:
        return _run(client, rank, secrets, local_socket.is_local(control))
    finally:
        client.close()


def _run(client: ControlClient, rank: int, secrets: RankSecrets, ipc: bool = False) -> int:
    client.send("hello", {"rank": rank, "pid": os.getpid()})
    reporter = _Reporter(client)
    try:
        msg = client.recv(timeout=SETUP_TIMEOUT_S)
    except BadMessage as e:
        return _refuse_setup(reporter, rank, f"rank 0's setup is malformed: {e}")
    if msg is None or msg.op != "setup":
        print(f"rank {rank}: rank 0 sent no setup within {SETUP_TIMEOUT_S:g} s", file=sys.stderr)
        return 1
    try:
        setup = RankSetup.from_meta(msg.meta, rank, secrets.rank_dir is not None)
    except ProtocolError as e:
        return _refuse_setup(reporter, rank, str(e))
    # 0 = this device's own choice: all its cores (it runs one rank)
    torch.set_num_threads(setup.threads or usable_cores())
    try:
        group = CommGroup.worker(rank, setup.world_size, setup.endpoints, setup.link,
                                 host=secrets.host, curve=secrets.curve, ipc=ipc)
        rank_dir = secrets.rank_dir or setup.rank_dir
        try:
            runtime = RankRuntime(rank_dir, group, setup.window, setup.context,
                                  prefetch=setup.prefetch)
            if runtime.scheduler.keep_all:
                runtime.scheduler.wait_all_loaded()
        except BaseException:
            group.close()
            raise
    except TpiError as e:
        return _refuse_setup(reporter, rank, str(e))
    reporter.send("ready", collect(runtime, rank).to_dict())
    try:
        return _serve(runtime, group, reporter, rank)
    finally:
        runtime.close()
        group.close()


def _refuse_setup(reporter: _Reporter, rank: int, why: str) -> int:
    """Tell rank 0 (and our log) why this rank cannot start; the exit code."""
    print(f"rank {rank}: {why}", file=sys.stderr)
    try:
        reporter.send("error", {"message": why[:500]})
    except TpiError:
        pass  # rank 0 is gone: the log line is all there is
    return 1


def _serve(runtime: RankRuntime, group: CommGroup, reporter: _Reporter, rank: int) -> int:
    parent = os.getppid()
    stop = threading.Event()
    threading.Thread(target=_push_stats, args=(runtime, reporter, rank, stop),
                     daemon=True).start()
    try:
        while True:
            try:
                meta, x = group.recv_step(timeout=1.0)
            except StepTimeout:
                if os.getppid() != parent:  # rank 0's process is gone: nobody to serve
                    return 0
                continue
            except BadStep as e:  # dropped whole: the link is still in step
                _bad_step(reporter, rank, str(e))
                continue
            except PeerError:
                return 0  # rank 0 closed the group or died
            op = meta.get("op")
            if op == "step":
                try:
                    pos = check_step(meta, x, runtime)
                except ProtocolError as e:
                    _bad_step(reporter, rank, str(e))
                    continue
                try:
                    runtime.forward(x, pos)
                except TpiError as e:
                    reporter.send("error", {"message": f"rank {rank}: {e}"})
                    return 1
            elif op == "stats":
                reporter.send("stats", collect(runtime, rank).to_dict())
            elif op == "stop":
                return 0
    finally:
        stop.set()


def _bad_step(reporter: _Reporter, rank: int, why: str) -> None:
    print(f"rank {rank}: dropped a bad step: {why}", file=sys.stderr, flush=True)
    try:
        reporter.send("error", {"message": f"rank {rank}: dropped a bad step from rank 0: "
                                           f"{why}"[:500]})
    except TpiError:
        pass  # rank 0 is gone: the next receive says so


def _prefetch(setup: dict) -> int | None:
    """The setup's prefetch depth: None or a positive int (it came over the wire)."""
    v = setup.get("prefetch")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ProtocolError(f"rank 0 sent a bad prefetch depth {shown(v)} (want a positive "
                            "integer)")
    return v


def _push_stats(runtime: RankRuntime, reporter: _Reporter, rank: int,
                stop: threading.Event) -> None:
    """Live numbers for the Devices panel, even while a long step runs."""
    while not stop.wait(STATS_EVERY_S):
        try:
            reporter.send("stats", collect(runtime, rank).to_dict())
        except Exception:  # the socket closes under us at shutdown
            return
