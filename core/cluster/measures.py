"""What the planner knows of a device and of its link: measured numbers, as plain data.

A device's numbers come from the device itself (core/cluster/measure_device.py; a worker
answers them on its control port), so `DeviceSpeed.from_dict` checks every value: a
hostile peer may send anything, and none of it may crash the planner or make it divide
by zero. Values out of range are clipped to what a real device could measure.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

# Weight formats whose read speed is measured: the shard dtypes' names as the splitter
# writes them (float tensors by dtype, llama.cpp blocks by format).
FORMATS = ("float32", "bfloat16", "float16", "int8", "q8_0", "q4_0", "q4_1")
MAX_GBPS = 1000.0
MIN_GBPS = 1e-3
MAX_MS = 60_000.0
MAX_SAMPLES = 64
MAX_MSG_MS = 5.0  # one end's control software per echo: ~0.07 ms measured on the test machine
MAX_GAP_MS = 1000.0
MAX_RESUME_MS = 50.0  # what waiting adds to one resume: ~0.4 ms after 2 ms on the test machine
MAX_GAPS = 16
PROBE_BYTES = 4096  # a link probe's echo: as big as a decode step's hidden state, about


def _num(v: Any, lo: float, hi: float, default: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return default
    return min(hi, max(lo, float(v)))


@dataclass(frozen=True)
class DeviceSpeed:
    """One device's speeds, as its ranks will see them (threads = its usable cores)."""

    read_gbps: dict[str, float]  # weight bytes the decode kernels stream per second, by format
    layer_ms: float  # one layer's fixed cost outside weight reads (norms, rope, attention, glue)
    gflops: float  # prefill: fp32 GEMM speed
    disk_gbps: float  # cold reads of its shard folder
    free_bytes: int  # memory available when measured
    cores: int
    measured_at: float = 0.0  # time.time() of the measurement
    # what one end's control-port software adds to an echo's round trip over a data-plane
    # frame, and half a data-plane frame's round trip on loopback (measure_messaging.py);
    # 0: not measured (an older device), then echoes are priced as they are
    msg_ms: float = 0.0
    frame_ms: float = 0.0
    # ((idle gap ms, what one resume after it adds, ms), ...) by gap (measure_idle.py);
    # (): not measured (an older device), then waiting is priced at nothing
    resume_ms: tuple[tuple[float, float], ...] = ()

    def resume_cost(self, gap_ms: float) -> float:
        """What resuming after `gap_ms` of waiting adds (ms): the measured curve, straight
        from (0, 0) to its first point and between points, flat past its last.

        A longer wait never cools a machine less, so a point above a later one is noise
        (on the test VM one device's 0.5 ms point read 0.64 ms between 0.17 and 0.35 at
        1 ms, and alone added 10 ms/token to a 3-device plan): each point counts as at
        most the lowest at or past its gap."""
        prev_gap, prev = 0.0, 0.0
        for gap, extra in _rising(self.resume_ms):
            if gap_ms <= gap:
                return prev + (extra - prev) * (gap_ms - prev_gap) / (gap - prev_gap)
            prev_gap, prev = gap, extra
        return prev

    def gbps(self, fmt: str) -> float:
        """Read speed of `fmt`, else of the slowest format measured (a cautious guess)."""
        got = self.read_gbps.get(fmt)
        if got:
            return got
        return min(self.read_gbps.values(), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"read_gbps": {k: round(v, 3) for k, v in self.read_gbps.items()},
                "layer_ms": round(self.layer_ms, 4), "gflops": round(self.gflops, 2),
                "disk_gbps": round(self.disk_gbps, 3), "free_bytes": int(self.free_bytes),
                "cores": int(self.cores), "measured_at": round(self.measured_at, 1),
                "msg_ms": round(self.msg_ms, 4), "frame_ms": round(self.frame_ms, 4),
                "resume_ms": [[g, round(x, 4)] for g, x in self.resume_ms]}

    @classmethod
    def from_dict(cls, d: Any) -> DeviceSpeed:
        """From a device's answer; anything malformed becomes a cautious default."""
        d = d if isinstance(d, dict) else {}
        reads = d.get("read_gbps")
        reads = reads if isinstance(reads, dict) else {}
        read_gbps = {k: _num(v, MIN_GBPS, MAX_GBPS, 1.0) for k, v in reads.items()
                     if k in FORMATS}
        return cls(read_gbps=read_gbps,
                   layer_ms=_num(d.get("layer_ms"), 0.0, 1000.0, 1.0),
                   gflops=_num(d.get("gflops"), 0.01, 1e6, 10.0),
                   disk_gbps=_num(d.get("disk_gbps"), MIN_GBPS, MAX_GBPS, 0.1),
                   free_bytes=int(_num(d.get("free_bytes"), 0, 2**50, 0)),
                   cores=int(_num(d.get("cores"), 1, 4096, 1)),
                   measured_at=_num(d.get("measured_at"), 0, 1e11, 0.0),
                   msg_ms=_num(d.get("msg_ms"), 0.0, MAX_MSG_MS, 0.0),
                   frame_ms=_num(d.get("frame_ms"), 0.0, MAX_MSG_MS, 0.0),
                   resume_ms=resume_points(d.get("resume_ms")))


@dataclass(frozen=True)
class LinkSpeed:
    """Round trips of small messages to a device (ms) and its bandwidth (Mbit/s, None:
    not measured), over the same transport and route as its data-plane link."""

    rtt_ms: tuple[float, ...] = field(default=())
    mbps: float | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.rtt_ms) if self.rtt_ms else 0.0

    @property
    def p90_ms(self) -> float:
        if not self.rtt_ms:
            return 0.0
        s = sorted(self.rtt_ms)
        return s[min(len(s) - 1, int(0.9 * len(s)))]

    def to_dict(self) -> dict[str, Any]:
        return {"rtt_ms": [round(x, 3) for x in self.rtt_ms], "mbps": self.mbps}


def resume_points(values: Any) -> tuple[tuple[float, float], ...]:
    """A bounded curve of sane (gap, extra) points, by gap, one per gap, from whatever
    list was given; malformed points are dropped."""
    if not isinstance(values, list | tuple):
        return ()
    points: dict[float, float] = {}
    for v in values[:MAX_GAPS]:
        if isinstance(v, list | tuple) and len(v) == 2:
            gap = _num(v[0], 0.0, MAX_GAP_MS, 0.0)
            if gap > 0:
                points.setdefault(gap, _num(v[1], 0.0, MAX_RESUME_MS, 0.0))
    return tuple(sorted(points.items()))


def rtt_samples(values: Any) -> tuple[float, ...]:
    """A bounded tuple of sane round-trip times from whatever list was given."""
    if not isinstance(values, list | tuple):
        return ()
    return tuple(_num(v, 0.0, MAX_MS, 0.0) for v in values[:MAX_SAMPLES])


def _rising(points: tuple[tuple[float, float], ...]) -> list[tuple[float, float]]:
    """`points` (by gap) with each extra lowered to the lowest at or past its gap."""
    out, low = [], float("inf")
    for gap, extra in reversed(points):
        low = min(low, extra)
        out.append((gap, low))
    return out[::-1]
