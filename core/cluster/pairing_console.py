"""The worker's console keys: P opens pairing.

On a terminal the worker reads single keys (cbreak mode: no Enter needed, Ctrl-C still
stops it; the terminal is restored at exit). Reading only happens in the foreground: a
worker started with `&` would be stopped by the terminal (SIGTTIN/SIGTTOU) if it
touched it, so it leaves the terminal alone. When stdin is a pipe, a line "p" (or
"pair") does the same, which is how scripts and tests press the key. A worker without
a console (a service: stdin is /dev/null) reads nothing; `tpi-chat worker --pair` opens
pairing on it instead (pairing_request.py).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

KEYS = frozenset({"p", "P"})


def _noop() -> None:
    pass


def watch_console(stop: threading.Event, on_pair: Callable[[], None]) -> Callable[[], None]:
    """Call `on_pair()` (from a reader thread) whenever the user presses P; returns the
    function that restores the terminal (call it at exit)."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # no stdin at all
        return _noop
    restore = _noop
    if os.isatty(fd):
        try:
            import termios
            import tty
        except ImportError:  # Windows console
            target = _windows_keys
        else:
            if os.tcgetpgrp(fd) != os.getpgrp():
                return _noop  # in the background: hands off the terminal
            saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)

            def restore() -> None:
                try:
                    termios.tcsetattr(fd, termios.TCSADRAIN, saved)
                except termios.error:
                    pass

            target = _tty_keys
    else:
        target = _lines
    threading.Thread(target=_guard, args=(target, fd, stop, on_pair), name="console-keys",
                     daemon=True).start()
    return restore


def _guard(target: Callable[..., None], fd: int, stop: threading.Event,
           on_pair: Callable[[], None]) -> None:
    try:
        target(fd, stop, on_pair)
    except Exception:  # the console going away must not matter to the worker
        log.debug("console reader stopped", exc_info=True)


def _tty_keys(fd: int, stop: threading.Event, on_pair: Callable[[], None]) -> None:
    import select

    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], 0.25)
        if not ready:
            continue
        key = os.read(fd, 1)
        if not key:
            return
        if key.decode("latin-1") in KEYS:
            on_pair()


def _windows_keys(fd: int, stop: threading.Event, on_pair: Callable[[], None]) -> None:
    import msvcrt
    import time

    while not stop.is_set():
        if msvcrt.kbhit():  # type: ignore[attr-defined]
            if msvcrt.getwch() in KEYS:  # type: ignore[attr-defined]
                on_pair()
        else:
            time.sleep(0.1)


def _lines(fd: int, stop: threading.Event, on_pair: Callable[[], None]) -> None:
    for line in sys.stdin:
        if stop.is_set():
            return
        if line.strip().lower() in ("p", "pair"):
            on_pair()
