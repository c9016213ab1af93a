"""Ops on a worker's CURVE control port (master DEALER -> worker ROUTER), and their checks.

    ping {t}                          -> pong {t, ranks: {"<rank>": exit code or -1 running}}
    info {}                           -> info {txt}
    ship_* (see ship_messages.py)     -> ship_* replies
    run_rank {split_id, rank, control} -> rank_started {rank} | refused {message}
    stop_rank {rank}                  -> rank_stopped {rank}
    unpair {}                         -> unpaired {}
    measure {fresh}                   -> measured {device: DeviceSpeed dict | None, pending,
                                                   error} (worker_measure.py: bounded)
    echo {t} + one uint8 tensor       -> echo {t} + the same bytes (a link probe, rate-limited)

The master's public key is never taken from a message: the worker uses the CURVE key
the request arrived with (authenticated by the ZAP allow-list of trusted masters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.cluster.ship_messages import REPLY_OPS, REQUEST_OPS, check_name
from core.comm.codec import shown
from core.errors import ProtocolError

TO_WORKER = frozenset({"ping", "info", "run_rank", "stop_rank", "unpair", "measure",
                       "echo"}) | REQUEST_OPS
TO_MASTER = frozenset({"pong", "info", "rank_started", "rank_stopped", "unpaired",
                       "refused", "measured", "echo"}) | REPLY_OPS
MAX_RANK = 256
_ENDPOINT_RE = re.compile(r"^tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):\d{1,5}$")


@dataclass(frozen=True)
class RunRank:
    """A master asks the worker to run one rank of a shard it shipped before."""

    split_id: str
    rank: int
    control: str  # the master's control endpoint, tcp://host:port

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> RunRank:
        rank, control = meta.get("rank"), meta.get("control")
        if not isinstance(rank, int) or isinstance(rank, bool) or not 0 < rank < MAX_RANK:
            raise ProtocolError(f"run_rank: rank {shown(rank)} is not a worker rank.")
        if not isinstance(control, str) or not _ENDPOINT_RE.match(control):
            raise ProtocolError("run_rank: the control endpoint is not tcp://host:port.")
        if not 0 < int(control.rsplit(":", 1)[1]) < 65536:
            raise ProtocolError("run_rank: the control port is out of range.")
        return cls(check_name(meta.get("split_id"), "split id"), rank, control)

    def to_meta(self) -> dict[str, Any]:
        return {"split_id": self.split_id, "rank": self.rank, "control": self.control}


def parse_size(text: str) -> int:
    """'3GB' -> 3 * 2**30 bytes ('512MB', '1.5G', '2000000' work too)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?\s*", text.upper())
    if not m:
        raise ValueError(f"'{text}' is not a size; write it like 3GB or 512MB")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " "))
