"""Running a reply on a thread someone else owns: the app's engine thread.

Every torch and kernel call of a model belongs on one thread (engine_worker.py: a second
thread stepping it gives libgomp a second OpenMP team, and then every team sleeps between
parallel regions, at about half the decode speed on 2 cores). The app's chat already runs
on its engine thread, so the API's replies go there too: `RunOn` is how the app lets
ModelWorker post a call to that thread (e.g. a queued Qt signal); it returns at once and
runs posted calls in order, between whatever else that thread does.

`hand_over` posts one call and waits until it ran. Until the call has begun there, the
waiter may withdraw it (its client left, the server stops): then it never runs, even if
the owner gets to it later, after the model closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

RunOn = Callable[[Callable[[], None]], None]

POLL_S = 0.05  # how often a posted call's waiter looks at its give-up condition


class _Posted:
    """One posted call: it either begins on the owner's thread or is withdrawn, not both."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "posted"  # -> "running" (the owner) or "withdrawn" (the waiter)
        self.begun = threading.Event()
        self.done = threading.Event()

    def begin(self) -> bool:
        with self._lock:
            if self._state != "posted":
                return False
            self._state = "running"
        self.begun.set()
        return True

    def withdraw(self) -> bool:
        with self._lock:
            if self._state != "posted":
                return False
            self._state = "withdrawn"
            return True


def hand_over(run_on: RunOn, call: Callable[[], None], give_up: Callable[[], bool]) -> bool:
    """Run `call` through `run_on` and wait until it returned: True. False: it never ran,
    because `give_up()` turned true (looked at every POLL_S) before it began, or run_on
    raised (the owner is gone). Once begun, the call is waited for to its end: make it
    end soon yourself (a cancelled reply ends after its current token)."""
    posted = _Posted()

    def there() -> None:
        if posted.begin():
            try:
                call()
            finally:
                posted.done.set()

    try:
        run_on(there)
    except Exception:  # e.g. the engine's QObject was deleted: nothing will run it
        return False
    while not posted.begun.wait(POLL_S):
        if give_up() and posted.withdraw():
            return False
    posted.done.wait()
    return True
