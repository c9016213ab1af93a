"""The pairing window: a worker pairs only while its user has opened pairing on it.

The user opens a window on the device (`tpi-chat worker --pair`, or P in its console);
it lasts a few minutes and has a fresh code. It closes when a master pairs (a code
pairs once), when the time is up, or after `max_tries` wrong codes (locked: the code is
discarded and only the user can open a new window). Outside a window the pairing port
answers `info` but refuses every `hello` before any cryptography, so a stranger gets
at most `max_tries` guesses per time the user opens pairing, and none otherwise.

`PairingGate` is shared by the pairing server's thread and the console's: every method
takes its lock. `on_event(event)` runs (outside the lock) when a window opens, is
extended, or closes, so the console can say so; keep it short.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.cluster import pairing_code

log = logging.getLogger(__name__)

DEFAULT_MINUTES = 5.0
MAX_MINUTES = 60.0
MAX_TRIES = 3

# Why a window closed (PairingEvent.reason).
PAIRED, LOCKED, EXPIRED, STOPPED = "paired", "locked", "expired", "stopped"


@dataclass(frozen=True)
class PairingEvent:
    """What the console shows: kind "opened", "extended", "wrong_code" or "closed"."""

    kind: str
    code: str = ""
    seconds_left: float = 0.0
    closes_at: float = 0.0  # wall clock (time.time()) when it closes
    reason: str = ""  # for "closed": PAIRED, LOCKED, EXPIRED or STOPPED
    peer: str = ""  # for PAIRED: the master's name; for "wrong_code": its address
    tries_left: int = 0  # for "wrong_code"


@dataclass
class _Window:
    generation: int
    code: str
    closes: float  # monotonic
    failures: int = 0


class PairingGate:
    def __init__(self, max_tries: int = MAX_TRIES,
                 on_event: Callable[[PairingEvent], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_tries = max_tries
        self.on_event = on_event
        self.clock = clock
        self._lock = threading.Lock()
        self._window: _Window | None = None
        self._generation = 0

    # -- the user's side (console, request file) --

    def open(self, minutes: float = DEFAULT_MINUTES) -> PairingEvent:
        """Open pairing for `minutes` with a new code; while a window is open this keeps
        its code (the user may have typed it already) and restarts its time."""
        seconds = min(max(minutes, 0.05), MAX_MINUTES) * 60
        with self._lock:
            w = self._current()
            kind = "extended" if w is not None else "opened"
            if w is None:
                self._generation += 1
                w = self._window = _Window(self._generation, pairing_code.new_code(), 0.0)
            w.closes = self.clock() + seconds
            event = self._describe(kind, w)
        self._emit(event)
        return event

    def close(self, reason: str = STOPPED) -> None:
        with self._lock:
            event = self._close(reason)
        self._emit(event)

    # -- the pairing server's side --

    def current(self) -> tuple[int, str] | None:
        """(generation, code) of the open window, or None when pairing is closed."""
        with self._lock:
            w = self._current()
            return (w.generation, w.code) if w else None

    def is_open(self, generation: int) -> bool:
        with self._lock:
            w = self._current()
            return w is not None and w.generation == generation

    def wrong_code(self, generation: int, source: str = "") -> int | None:
        """Count a wrong code (from address `source`) against window `generation`: the
        tries left (0 = now locked), or None when that window is no longer open."""
        closed = None
        with self._lock:
            w = self._current()
            if w is None or w.generation != generation:
                return None
            w.failures += 1
            left = max(0, self.max_tries - w.failures)
            if left == 0:
                closed = self._close(LOCKED)
        self._emit(PairingEvent("wrong_code", peer=source, tries_left=left))
        self._emit(closed)
        return left

    def paired(self, generation: int, peer: str) -> bool:
        """Close window `generation` after a pairing (a code pairs once); False when it
        had closed already."""
        with self._lock:
            w = self._current()
            if w is None or w.generation != generation:
                return False
            event = self._close(PAIRED, peer)
        self._emit(event)
        return True

    def tick(self) -> None:
        """Close a window whose time is up (called often by the server's loop, so the
        console says so on time rather than at the next attempt)."""
        with self._lock:
            w = self._window
            event = self._close(EXPIRED) if w and w.closes <= self.clock() else None
        self._emit(event)

    # -- inside the lock --

    def _current(self) -> _Window | None:
        w = self._window
        return w if w is not None and w.closes > self.clock() else None

    def _close(self, reason: str, peer: str = "") -> PairingEvent | None:
        if self._window is None:
            return None
        self._window = None
        return PairingEvent("closed", reason=reason, peer=peer)

    def _describe(self, kind: str, w: _Window) -> PairingEvent:
        left = w.closes - self.clock()
        return PairingEvent(kind, w.code, left, time.time() + left)

    def _emit(self, event: PairingEvent | None) -> None:
        if event is not None and self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # the console's trouble must not stop pairing
                log.exception("pairing event handler failed")
