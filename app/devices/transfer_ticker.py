"""Shard shipping progress paced for a device card: at most a few redraws a second.

Updates (bytes done, bytes total) arrive in the GUI thread as queued signals from the
engine thread, one per chunk the worker acknowledged: up to a hundred a second on a fast
link. Each feeds a core.cluster.transfer_rate.TransferRate (timed on arrival: the signal
carries bytes only), but `changed` fires only for the first and the last update and then
every REFRESH_MS from a timer, which also lets a stall show: the rate decays although no
update comes. The end is reported once: the sender reports it again for each file's and
the commit's acknowledgement. Nothing here waits: the timer is the GUI thread's own.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, QTimer, Signal

from core.cluster.transfer_rate import Clock, TransferRate

REFRESH_MS = 250


class TransferTicker(QObject):
    """`update(done, total)` in, `changed(TransferEstimate)` out, paced; `stop()` ends it."""

    changed = Signal(object)  # TransferEstimate

    def __init__(self, parent: QObject | None = None, clock: Clock = time.monotonic):
        super().__init__(parent)
        self._clock = clock
        self._meter: TransferRate | None = None
        self._ended: tuple[int, int] | None = None  # (done, total) of the end shown
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)

    @property
    def active(self) -> bool:
        """A transfer is being shown and not finished (perhaps stalled)."""
        return self._meter is not None

    @property
    def ticking(self) -> bool:
        """Bytes are on their way: active and not stalled."""
        return self._timer.isActive()

    def update(self, done: int, total: int) -> None:
        if (done, total) == self._ended:
            return
        self._ended = None
        first = self._meter is None
        if first:
            self._meter = TransferRate(self._clock)
        e = self._meter.update(done, total)
        if first or e.finished:  # show at once that shipping began, and that it ended
            self.changed.emit(e)
        if e.finished:
            self.stop()
            self._ended = (done, total)
        elif not self._timer.isActive():
            self._timer.start()

    def refresh(self) -> None:
        """Emit the estimate as of now (the timer calls it)."""
        if self._meter is None:
            return
        e = self._meter.estimate()
        self.changed.emit(e)
        if e.rate == 0:  # stalled: nothing changes until bytes come (update restarts it)
            self._timer.stop()

    def stop(self) -> None:
        """The card shows something else now; a later transfer is measured afresh."""
        self._timer.stop()
        self._meter = None
        self._ended = None

