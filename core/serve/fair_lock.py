"""A lock that hands over in arrival order: the app's chat and the API share one model.

threading.Lock is not fair: a thread that releases it and asks again at once (the API's
model thread going from one queued request to the next) usually wins over one that has
been waiting (the user's reply), so a busy API could keep the user waiting for ever.
Here each waiter takes its place in a queue and the lock goes to the first in line.

    lock = FairLock()
    with lock: ...                              # the API's model thread
    if lock.acquire_unless(stop.is_set): ...    # the app: wait in line, or give up on Esc
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

POLL_S = 0.05  # how often a waiter looks at its stop flag


class FairLock:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._line: deque[object] = deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Like threading.Lock.acquire, but first come, first served."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        return self._wait(blocking, lambda: deadline is not None and time.monotonic() >= deadline)

    def acquire_unless(self, stop: Callable[[], bool]) -> bool:
        """Wait in line until the lock is ours (True) or `stop()` turns true (False)."""
        return self._wait(True, stop)

    def _wait(self, blocking: bool, give_up: Callable[[], bool]) -> bool:
        with self._cond:
            if not self._held and not self._line:
                self._held = True
                return True
            if not blocking:
                return False
            me = object()
            self._line.append(me)
            try:
                while self._held or self._line[0] is not me:
                    if give_up():
                        return False
                    self._cond.wait(POLL_S)
                self._held = True
                return True
            finally:
                self._line.remove(me)
                self._cond.notify_all()  # the next in line may be first now

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unheld FairLock")
            self._held = False
            self._cond.notify_all()

    def locked(self) -> bool:
        with self._cond:
            return self._held

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
