"""FairLock: first come, first served, even against a thread that releases and asks again
at once; a waiter that gives up leaves the line."""

from __future__ import annotations

import threading
import time

import pytest

from core.serve.fair_lock import FairLock


def _waiting(lock: FairLock, n: int) -> None:
    deadline = time.monotonic() + 5
    while len(lock._line) < n:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_waiters_get_it_in_arrival_order():
    lock = FairLock()
    lock.acquire()
    order: list[int] = []

    def take(i: int) -> None:
        with lock:
            order.append(i)

    threads = []
    for i in range(4):
        t = threading.Thread(target=take, args=(i,))
        t.start()
        threads.append(t)
        _waiting(lock, i + 1)
    lock.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3]


def test_a_thread_that_releases_and_asks_again_goes_behind_the_waiter():
    lock = FairLock()
    got: list[str] = []
    lock.acquire()
    t = threading.Thread(target=lambda: (lock.acquire(), got.append("waiter"), lock.release()))
    t.start()
    _waiting(lock, 1)
    lock.release()
    with lock:  # at once, as the API's model thread does between two requests
        got.append("greedy")
    t.join(5)
    assert got == ["waiter", "greedy"]


def test_giving_up_leaves_the_line():
    lock = FairLock()
    lock.acquire()
    stop = threading.Event()
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(lock.acquire_unless(stop.is_set)))
    t.start()
    _waiting(lock, 1)
    stop.set()
    t.join(5)
    assert result == [False] and not lock._line
    assert not lock.acquire(timeout=0.05)  # still held by us
    lock.release()
    assert lock.acquire(blocking=False) and lock.locked()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
