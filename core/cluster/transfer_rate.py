"""How fast a transfer goes and how long it has left, in numbers and in words.

    meter = TransferRate()               # clock=time.monotonic; tests pass a fake one
    e = meter.update(done, total)        # at every progress report (bytes)
    shipping_line(e)                     # "Shipping 412 / 980 MB · 11.3 MB/s · 50 s left"

The rate is the bytes that arrived over a sliding window of the last WINDOW_S seconds
divided by the time the window spans, so one slow chunk or a lump of acks moves it a
little instead of to zero or to a spike. It (and the time left, remaining bytes / rate)
is only given once MIN_SPAN_S of samples exist: before that the line says "estimating…".
When reports stop coming, the rate decays to 0 over one window and the line says
"stalled". Pure: no Qt, no I/O, the clock injected.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 5.0  # the rate covers about this much recent time
MIN_SPAN_S = 1.0  # no rate nor time left before this much time has been measured
# Silence shorter than this is taken as the gap between two reports, not as a slowdown;
# without it the rate would sag between every two reports on a slow link.
GRACE_S = 1.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class TransferEstimate:
    """Where a transfer stands: bytes, and (once measured) its rate and time left."""

    done: int
    total: int
    rate: float | None  # bytes/s over the window; None while estimating
    eta_s: float | None  # None while estimating, when stalled (rate 0) or when finished

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 1.0

    @property
    def finished(self) -> bool:
        return self.done >= self.total


class TransferRate:
    """A smoothed rate and time left from (clock(), bytes done) samples of one transfer.

    Bytes done going down means a new transfer started: the samples start afresh.
    """

    def __init__(self, clock: Clock = time.monotonic, *, window_s: float = WINDOW_S,
                 min_span_s: float = MIN_SPAN_S, grace_s: float = GRACE_S):
        self._clock = clock
        self.window_s, self.min_span_s, self.grace_s = window_s, min_span_s, grace_s
        # (time, bytes done), oldest first; the oldest is the window's anchor, which may
        # lie before the window's start so the window is never measured short
        self._samples: deque[tuple[float, int]] = deque()
        self.done = 0
        self.total = 0

    def update(self, done: int, total: int) -> TransferEstimate:
        """Record that `done` of `total` bytes are through now; the estimate as of now."""
        now = self._clock()
        if self._samples and done < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((now, done))
        self.done, self.total = done, total
        return self._estimate(now)

    def estimate(self) -> TransferEstimate:
        """The estimate as of now (a stall shows: no update means no bytes)."""
        return self._estimate(self._clock())

    def _estimate(self, now: float) -> TransferEstimate:
        rate = self._rate(now)
        left = self.total - self.done
        eta = left / rate if rate and left > 0 else None
        return TransferEstimate(self.done, self.total, rate, eta)

    def _rate(self, now: float) -> float | None:
        if not self._samples:
            return None
        t_last, d_last = self._samples[-1]
        end = max(t_last, now - self.grace_s)
        # keep one sample at or before the window's start: the anchor
        while len(self._samples) > 1 and self._samples[1][0] <= end - self.window_s:
            self._samples.popleft()
        t0, d0 = self._samples[0]
        span = end - t0
        if span < self.min_span_s:
            return None
        return (d_last - d0) / span


def format_duration(seconds: float) -> str:
    """50 s, 3 min 20 s, 1 h 5 min: as precise as a person reading it needs."""
    s = round(seconds)
    if seconds > 0:
        s = max(s, 1)  # something left is never "0 s"
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, s = divmod(s, 60)
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(s // 60, 60)
    return f"{h} h {m} min" if m else f"{h} h"


_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "KB"), (1.0, "B"))


def _unit(n: float) -> tuple[float, str]:
    """The largest decimal unit `n` holds at least one of (network speeds are decimal)."""
    return next(((size, name) for size, name in _UNITS if abs(n) >= size), _UNITS[-1])


def _number(x: float) -> str:
    return f"{x:.1f}" if x < 99.95 else f"{x:.0f}"


def format_rate(bytes_per_s: float) -> str:
    """11.3 MB/s, 850 KB/s, 1.2 GB/s."""
    size, name = _unit(bytes_per_s)
    return f"{_number(bytes_per_s / size)} {name}/s"


def _amount(n: float, size: float, name: str) -> str:
    return f"{n / size:.1f}" if name == "GB" else f"{n / size:.0f}"


def format_amount(done: int, total: int) -> str:
    """'412 / 980 MB': both in the unit of the total; whole numbers below GB."""
    size, name = _unit(total)
    # done rounds down, so 979.6 of 980 MB never reads as "980 / 980 MB" while unfinished
    step = size / 10 if name == "GB" else size
    shown = total if done >= total else math.floor(done / step) * step
    return f"{_amount(shown, size, name)} / {_amount(total, size, name)} {name}"


def shipping_line(e: TransferEstimate) -> str:
    """The one line a device card and the command line show for shards on their way."""
    if e.finished:
        size, name = _unit(e.total)
        line = f"Shipped {_amount(e.total, size, name)} {name}"
        return line + f" \u00b7 {format_rate(e.rate)}" if e.rate else line
    head = f"Shipping {format_amount(e.done, e.total)}"
    if e.rate is None:
        return f"{head} \u00b7 estimating\u2026"
    if e.eta_s is None:  # a rate of 0: nothing arrived for a whole window
        return f"{head} \u00b7 stalled"
    return f"{head} \u00b7 {format_rate(e.rate)} \u00b7 {format_duration(e.eta_s)} left"
