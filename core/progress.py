"""Progress reporting: a stage that names the device it is about, and a one-line progress
bar on stderr for long CLI operations (import, split, load).

Long operations report `progress(stage: str, done, total)`. A stage about one device
(shipping shards to a paired worker) is a `DeviceStage`: still the str a progress bar
shows, plus the device's name as data, so a listener needs no parsing to find the device.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Progress = Callable[[str, int, int], None]  # progress(stage, done, total)
StageProgress = Callable[[int, int], None]  # progress(done, total) within one stage


class DeviceStage(str):
    """A progress stage's text that also carries `device`, the name of the device it is
    about (a str subclass, so every `progress(stage, done, total)` passes it on as is)."""

    device: str

    def __new__(cls, text: str, device: str) -> DeviceStage:
        stage = super().__new__(cls, text)
        stage.device = device
        return stage


class TermProgress:
    """Callable(done, total) that redraws `label [####    ] 42%` at most 10 times a second."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        final = total > 0 and done >= total
        if not final and now - self._last < 0.1:
            return
        self._last = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r{self.label} [{bar:<30}] {frac:4.0%}")
        self._shown = True
        if final:
            self.stream.write("\n")
            self._shown = False
        self.stream.flush()

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
