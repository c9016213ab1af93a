"""A rank on a paired worker: ship its shard dir, ask the worker to run it, watch it.

The RankHost LocalCluster uses for remote ranks (core/ranks/rank_host.py): the rank
process then connects to the master's CURVE control channel like a local rank does.
"""

from __future__ import annotations

import time
from pathlib import Path

from core.cluster.ship_sender import ShipProgress, split_id_for
from core.cluster.this_machine import on_this_machine
from core.cluster.worker_link import Refused, WorkerLink
from core.comm.endpoint import host_of
from core.errors import PeerError, TpiError
from core.progress import DeviceStage, Progress


class RemoteRankHost:
    def __init__(self, link: WorkerLink):
        self.link = link
        self.name = f"'{link.name}'"
        self.public_key = link.worker_key  # its rank processes connect with the worker's key
        self.same_machine = on_this_machine(link.endpoint)
        self.peer_host = host_of(link.endpoint)
        self.rank = 0
        self.started_at = float("inf")

    def start(self, rank: int, control: str, rank_dir: Path, report: Progress) -> None:
        self.rank = rank
        split_id = split_id_for(rank_dir)
        stage = DeviceStage(f"sending shards to {self.name}", self.link.name)

        def progress(p: ShipProgress) -> None:
            report(stage, p.bytes_done, p.bytes_total)

        self.link.ship(rank_dir, split_id, progress)
        self.started_at = time.monotonic()
        try:
            self.link.request("run_rank", {"split_id": split_id, "rank": rank,
                                           "control": control}, {"rank_started"})
        except Refused as e:
            raise PeerError(f"{self.name} could not start its share of the model: "
                            f"{e.reason}") from None

    def exit_reason(self) -> str | None:
        if self.link.dead:
            return f"the device stopped answering ({self.link.dead})"
        if self.link.ranks_asked_at < self.started_at:
            return None  # the worker's last report predates this rank
        code = self.link.ranks.get(str(self.rank), -1)
        if code == -1:
            return None
        words = self.link.last_words.get(str(self.rank))
        return f"its rank process exited with code {code}" + (f": {words}" if words else "")

    def stop(self, timeout: float = 5.0) -> None:
        if self.link.dead:
            return
        try:
            self.link.request("stop_rank", {"rank": self.rank}, {"rank_stopped"},
                              timeout=timeout)
        except TpiError:
            pass
