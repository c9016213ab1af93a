"""A worker's answers to `measure` and `echo`: its speeds for a master's planner, and a
link probe. What a paired master can make the worker do with them is bounded:

- `measure` answers the cached numbers at once (the control loop, and so every master's
  heartbeat, never waits); a measurement runs in a child process in the background
  (never while ranks run here, nor when the master asks `start: false`)
  (core/cluster/measure_device.py: fixed buffer sizes, ~3 s of CPU), when none is cached,
  when the cache is older than STALE_S, or when a master asks `fresh` and the last one is
  older than MIN_GAP_S. Never two at once: at most one measurement a MIN_GAP_S, whatever
  any master sends.
- `echo` sends back the bytes it got (at most MAX_ECHO_BYTES a message; the codec's
  limits already refuse bigger frames), within ECHO_BUDGET bytes per ECHO_WINDOW_S over
  all masters together; past that it is refused until the window moves on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from core.cluster.measure_device import measure
from core.cluster.measures import FORMATS, DeviceSpeed
from core.errors import ProtocolError, TpiError

log = logging.getLogger(__name__)
STALE_S = 3600.0
MIN_GAP_S = 60.0
MAX_ECHO_BYTES = 1 << 20
ECHO_BUDGET = 32 << 20
ECHO_WINDOW_S = 10.0
CACHE_FILE = "device_speed.json"


class DeviceMeasurer:
    """This device's cached speeds (`DATA_DIR/device_speed.json`) and their refresh."""

    def __init__(self, data_dir: Path, folder: Path, measure_fn=measure,
                 busy=lambda: False):
        self.path = Path(data_dir) / CACHE_FILE
        self.folder = Path(folder)
        self._measure = measure_fn
        self._busy = busy  # ranks run here: a measurement would slow them and be wrong
        self._lock = threading.Lock()
        self._running = False
        self._started_at = -MIN_GAP_S  # monotonic, of the last measurement started
        self.error: str | None = None
        self.speed: DeviceSpeed | None = self._load()

    def _load(self) -> DeviceSpeed | None:
        try:
            return DeviceSpeed.from_dict(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return None

    def answer(self, fresh: bool = False, formats: Any = None, start: bool = True
               ) -> dict[str, Any]:
        """{device: cached numbers or None, pending: a measurement is running}; starts one
        in the background when due (see the module docstring), unless `start` is False or
        ranks run here. `formats`: the weight formats wanted (a list of FORMATS names;
        others are ignored; None: all)."""
        fmts = tuple(f for f in FORMATS if not isinstance(formats, list) or f in formats)
        now = time.monotonic()
        with self._lock:
            cached = self.speed
            stale = (cached is None or time.time() - cached.measured_at > STALE_S
                     or not set(fmts) <= set(cached.read_gbps))
            due = (stale or fresh) and now - self._started_at >= MIN_GAP_S
            if due and start and not self._running and not self._busy():
                self._running, self._started_at = True, now
                threading.Thread(target=self._run, args=(fmts or FORMATS,),
                                 name="measure-device", daemon=True).start()
            return {"device": cached.to_dict() if cached is not None else None,
                    "pending": self._running, "error": self.error}

    def _run(self, formats: tuple[str, ...]) -> None:
        try:
            speed = self._measure(self.folder, formats)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(speed.to_dict()))
            tmp.replace(self.path)
            with self._lock:
                self.speed, self.error = speed, None
        except (TpiError, OSError, ValueError) as e:
            log.warning("measuring this device failed: %s", e)
            with self._lock:
                self.error = str(e)[:200]
        finally:
            with self._lock:
                self._running = False


class EchoBudget:
    """Bytes echoed in the last ECHO_WINDOW_S, over every master."""

    def __init__(self, budget: int = ECHO_BUDGET, window_s: float = ECHO_WINDOW_S):
        self.budget, self.window_s = budget, window_s
        self._sent: deque[tuple[float, int]] = deque()
        self._total = 0

    def take(self, nbytes: int) -> None:
        """Count `nbytes` to echo, or ProtocolError when it is too big or over budget."""
        if nbytes > MAX_ECHO_BYTES:
            raise ProtocolError(f"echo: at most {MAX_ECHO_BYTES} bytes a message")
        nbytes = max(nbytes, 1024)  # so tiny messages cannot pile up entries
        now = time.monotonic()
        while self._sent and self._sent[0][0] < now - self.window_s:
            self._total -= self._sent.popleft()[1]
        if self._total + nbytes > self.budget:
            raise ProtocolError("echo: too many probes just now; try again in a few seconds")
        self._sent.append((now, nbytes))
        self._total += nbytes
