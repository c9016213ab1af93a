"""The worker's ports stay the same across restarts (a reboot, a service restart).

Masters remember a device's control port; a worker that came back on new ports could only
be found again through mDNS, and not at all by a master that pairs by HOST:PORT. So the
ports bound last time are kept in DATA_DIR/ports.json and tried first; a port that is taken
now falls back to a new one (and that one is kept).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import zmq

from core.errors import TpiError

FILE_NAME = "ports.json"
T = TypeVar("T")


def saved_ports(data_dir: Path) -> dict[str, int]:
    """{"control": port, "pairing": port} from the last run (empty when unknown)."""
    try:
        raw = json.loads((Path(data_dir) / FILE_NAME).read_text(encoding="utf-8")[:4096])
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if k in ("control", "pairing")
            and isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536}


def save_ports(data_dir: Path, control: int, pairing: int) -> None:
    path = Path(data_dir) / FILE_NAME
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"control": control, "pairing": pairing}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only data dir: ports change at the next restart, nothing worse


def bind_preferring(bind: Callable[[int], T], preferred: int | None) -> T:
    """`bind(preferred)`, or `bind(0)` (any free port) when that port is taken now."""
    if preferred:
        try:
            return bind(preferred)
        except (zmq.ZMQError, TpiError, OSError):
            pass
    return bind(0)
