"""A worker rank's process: join rank 0, load this rank's blocks, run steps until told to stop.

Started by rank 0 for local ranks (`tpi-chat rank --control EP --rank R`); the worker
daemon on a peer device runs the same loop once its shards have been shipped.
With `--curve-stdin` the process first reads one JSON line from stdin (never argv or the
environment, which other users can see): {"public_key", "secret_key", "server_key"} for
CURVE on the control channel and data plane, plus optional "rank_dir" (overrides the
master's path: a peer device has its own copy) and "host" (address our ring link binds).
Control channel (DEALER, to rank 0): hello -> setup -> ready, then stats and error.
Data plane (CommGroup): step broadcasts and the two allreduces per layer.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from core.comm.broadcast import StepTimeout
from core.comm.control import ControlClient
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


def main(control: str, rank: int, curve_stdin: bool = False) -> int:
    secrets = RankSecrets.read(sys.stdin) if curve_stdin else None
    client = ControlClient(control, ops=CONTROL_OPS,
                           curve=secrets.curve if secrets else None)
    try:
        return _run(client, rank, secrets)
    finally:
        client.close()


def _run(client: ControlClient, rank: int, secrets: RankSecrets | None = None) -> int:
    client.send("hello", {"rank": rank, "pid": os.getpid()})
    msg = client.recv(timeout=SETUP_TIMEOUT_S)
    if msg is None or msg.op != "setup":
        print(f"rank {rank}: rank 0 sent no setup within {SETUP_TIMEOUT_S:g} s", file=sys.stderr)
        return 1
    setup = msg.meta
    # 0 = this device's own choice: all its cores (it runs one rank)
    torch.set_num_threads(int(setup["threads"]) or usable_cores())
    reporter = _Reporter(client)
    try:
        link = LinkEmulation(**setup["link"]) if setup.get("link") else None
        group = CommGroup.worker(rank, int(setup["world_size"]), setup["endpoints"], link,
                                 host=secrets.host if secrets else "127.0.0.1",
                                 curve=secrets.curve if secrets else None)
        rank_dir = secrets.rank_dir if secrets and secrets.rank_dir else Path(setup["rank_dir"])
        runtime = RankRuntime(rank_dir, group, setup.get("window"),
                              int(setup["context"]), prefetch=_prefetch(setup))
        if runtime.scheduler.keep_all:
            runtime.scheduler.wait_all_loaded()
    except TpiError as e:
        reporter.send("error", {"message": str(e)})
        return 1
    reporter.send("ready", collect(runtime, rank).to_dict())
    try:
        return _serve(runtime, group, reporter, rank)
    finally:
        runtime.close()
        group.close()


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
            except PeerError:
                return 0  # rank 0 closed the group or died
            op = meta.get("op")
            if op == "step":
                try:
                    runtime.forward(x, int(meta["pos"]))
                except TpiError as e:
                    reporter.send("error", {"message": f"rank {rank}: {e}"})
                    return 1
            elif op == "stats":
                reporter.send("stats", collect(runtime, rank).to_dict())
            elif op == "stop":
                return 0
    finally:
        stop.set()


def _prefetch(setup: dict) -> int | None:
    """The setup's prefetch depth: None or a positive int (it came over the wire)."""
    v = setup.get("prefetch")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ProtocolError(f"rank 0 sent a bad prefetch depth {v!r} (want a positive integer)")
    return v


def _push_stats(runtime: RankRuntime, reporter: _Reporter, rank: int,
                stop: threading.Event) -> None:
    """Live numbers for the Devices panel, even while a long step runs."""
    while not stop.wait(STATS_EVERY_S):
        try:
            reporter.send("stats", collect(runtime, rank).to_dict())
        except Exception:  # the socket closes under us at shutdown
            return
