"""Shipping progress on the command line: one line on stderr, redrawn in place.

    'mini-pc' [########            ] Shipping 412 / 980 MB · 11.3 MB/s · 50 s left

The words are the device card's (core.cluster.transfer_rate.shipping_line). Progress comes
once per acknowledged chunk, so the line is redrawn at most every REDRAW_S (the first and
the last report always; the last only once, though the sender repeats it for each file's
and the commit's acknowledgement). It is cut to the terminal's width, because a carriage return only
goes back to the start of the last screen row: a wrapped line would leave a trail.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from typing import TextIO

from core.cluster.transfer_rate import Clock, TransferEstimate, TransferRate, shipping_line

REDRAW_S = 0.25
BAR = 20


class ShipTermLine:
    """Callable(done, total) in bytes for the shards going to `device`."""

    def __init__(self, device: str, stream: TextIO | None = None,
                 clock: Clock = time.monotonic, columns: int | None = None):
        self.device = device
        self.stream = stream or sys.stderr
        self._clock = clock
        self._columns = columns  # None: the terminal's, asked at every redraw
        self._meter: TransferRate | None = None
        self._ended: tuple[int, int] | None = None  # (done, total) of the end printed
        self._drawn_at = -math.inf
        self._width = 0  # of the line on screen: a shorter one is padded to cover it

    def __call__(self, done: int, total: int) -> None:
        if (done, total) == self._ended:
            return
        self._ended = None
        if self._meter is None:
            self._meter = TransferRate(self._clock)
        e = self._meter.update(done, total)
        now = self._clock()
        if not e.finished and now - self._drawn_at < REDRAW_S:
            return
        self._drawn_at = now
        line = self.line(e)
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        if e.finished:
            self._end()
            self._ended = (done, total)
        self.stream.flush()

    def close(self) -> None:
        """End a line left unfinished (the ship was given up), so what is printed next
        starts on a line of its own."""
        if self._width:
            self._end()
            self.stream.flush()

    def _end(self) -> None:
        self.stream.write("\n")
        self._width = 0
        self._meter = None  # shipping to this device again is measured afresh
        self._drawn_at = -math.inf

    def line(self, e: TransferEstimate) -> str:
        """The device, a bar and the card's words, within the terminal's width."""
        cols = (self._columns or shutil.get_terminal_size((80, 24)).columns) - 1
        text = shipping_line(e)
        bar = f"[{'#' * int(e.fraction * BAR):<{BAR}}]"
        name = f"'{self.device}'"
        room = cols - len(bar) - len(text) - 2
        if len(name) > room:  # a long device name gives way to the numbers
            name = name[:room - 1] + "\u2026" if room > 3 else ""
        return f"{name} {bar} {text}".strip()[:cols]
