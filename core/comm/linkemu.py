"""Optional link emulation: added latency and limited bandwidth on data-plane sends.

Used to reproduce home links (Wi-Fi, 100 Mbit Ethernet) on one machine. Each send
sleeps `delay_ms + bytes * 8 / bandwidth` before it goes out. Sends of one rank are
serialised, which models a shared half-duplex medium such as Wi-Fi: rank 0 sending a
result to three workers pays the cost three times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# time.sleep overshoots by ~50-100 us on Linux; spin the tail for sub-ms accuracy.
_SPIN_S = 200e-6


def precise_sleep(seconds: float) -> None:
    """Sleep `seconds` with ~10 us accuracy: coarse sleep first, then spin."""
    if seconds <= 0:
        return
    end = time.perf_counter() + seconds
    coarse = seconds - _SPIN_S
    if coarse > 0:
        time.sleep(coarse)
    while time.perf_counter() < end:
        pass


@dataclass(frozen=True)
class LinkEmulation:
    """Per-send delay and optional bandwidth cap; `None` in the group means a real link."""

    delay_ms: float = 0.0
    bandwidth_mbps: float | None = None

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if self.bandwidth_mbps is not None and self.bandwidth_mbps <= 0:
            raise ValueError("bandwidth_mbps must be > 0")

    def cost_s(self, nbytes: int) -> float:
        """Seconds one send of `nbytes` takes on this link before it leaves."""
        s = self.delay_ms / 1e3
        if self.bandwidth_mbps is not None:
            s += nbytes * 8 / (self.bandwidth_mbps * 1e6)
        return s

    def before_send(self, nbytes: int) -> None:
        """Block for the emulated cost of sending `nbytes`."""
        precise_sleep(self.cost_s(nbytes))
