"""Opening pairing on the device: --pair's checks, P on the console (a pipe here), and
`tpi-chat worker --pair` reaching a running worker through its data folder (lock, request
and answer files). The same against a real worker: test_pairing_attacks.py."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import threading
import time

import pytest

from core.cluster import pairing_console
from core.cluster.pairing_request import (
    OPEN_FILE,
    REQUEST_FILE,
    DaemonLock,
    PairingRequests,
    ask_running_worker,
)
from core.errors import TpiError
from core.worker import main as worker_main
from core.worker import pair_minutes


def _args(**kw) -> argparse.Namespace:
    base = dict(install_service=False, uninstall_service=False, data_dir=None, masters=False,
                unpair=None, memory_budget=None, pair=None, name=None, host=None, port=0)
    return argparse.Namespace(**{**base, **kw})


def test_pair_minutes_are_checked() -> None:
    assert pair_minutes(_args()) is None
    assert pair_minutes(_args(pair=5.0)) == 5.0
    for bad in (0.0, -1.0, 61.0):
        with pytest.raises(TpiError, match="--pair takes a number of minutes up to 60"):
            pair_minutes(_args(pair=bad))


def test_a_service_is_not_installed_with_pairing_open(tmp_path) -> None:
    with pytest.raises(TpiError, match="the service starts with pairing closed: install it "
                                       "without --pair, then run `tpi-chat worker --pair`"):
        worker_main(_args(install_service=True, pair=5.0, data_dir=str(tmp_path)))


def test_the_lock_is_exclusive_and_dies_with_its_holder(tmp_path) -> None:
    a, b = DaemonLock(tmp_path), DaemonLock(tmp_path)
    assert a.acquire()
    assert not b.acquire()
    a.release()
    assert b.acquire()
    b.release()


def test_a_request_reaches_the_running_worker_and_its_answer_comes_back(tmp_path) -> None:
    worker = PairingRequests(tmp_path)
    stop = threading.Event()

    def serve() -> None:  # what the worker's request thread does
        while not stop.wait(0.05):
            got = worker.take()
            if got is not None:
                rid, minutes = got
                worker.answer(rid, name="mini-pc", code="482-913", until=time.time() + 60,
                              minutes=minutes, address="192.168.1.20:47000")

    t = threading.Thread(target=serve)
    t.start()
    try:
        ans = ask_running_worker(tmp_path, 2.0, timeout=5)
    finally:
        stop.set()
        t.join()
    assert ans["code"] == "482-913" and ans["minutes"] == 2.0 and ans["name"] == "mini-pc"
    answer = tmp_path / OPEN_FILE
    if os.name == "posix":
        assert stat.S_IMODE(answer.stat().st_mode) == 0o600
    assert not (tmp_path / REQUEST_FILE).exists()
    worker.withdraw()
    assert not answer.exists()


def test_no_answer_is_a_clear_error_and_leaves_no_request(tmp_path) -> None:
    with pytest.raises(TpiError, match="did not open pairing within 0.3 s; is it stuck"):
        ask_running_worker(tmp_path, 5.0, timeout=0.3)
    assert not (tmp_path / REQUEST_FILE).exists()


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"id": "../x", "minutes": 5}',
                                     b'{"id": "ab", "minutes": "5"}', b"x" * 10000])
def test_a_damaged_request_is_dropped(tmp_path, content: bytes) -> None:
    (tmp_path / REQUEST_FILE).write_bytes(content)
    assert PairingRequests(tmp_path).take() is None  # (cleared at start)
    w = PairingRequests(tmp_path)
    (tmp_path / REQUEST_FILE).write_bytes(content)
    assert w.take() is None and not (tmp_path / REQUEST_FILE).exists()


def test_p_on_the_console_opens_pairing(monkeypatch) -> None:
    r, w = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(r, "r"))
    pressed = []
    stop = threading.Event()
    restore = pairing_console.watch_console(stop, lambda: pressed.append(1))
    with os.fdopen(w, "w") as keys:
        keys.write("x\nP\n\npair\n")
    deadline = time.monotonic() + 3
    while len(pressed) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    restore()
    assert pressed == [1, 1]
