"""The master's pairing client against a fake worker that floods it: a 4 GB length, endless
garbage, a ZeroMQ multipart flood (the ZeroMQ client kept every frame of it: `tpi-chat
pair` peaked at 1317 MB against 236 MB in 3 s), a byte trickle.
The client holds at most a frame, gives up at its deadline, and says what went wrong in a
sentence: in process (tracemalloc) and as `tpi-chat pair` (peak RSS of the process)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from core.cluster.pairing import PairingError
from core.cluster.pairing_client import pair_with, query_info
from core.cluster.pairing_wire import LENGTH, MAX_FRAME
from tests.core.cluster.devices import make_device
from tests.fixtures.pairing_attacks import MB, MORE_EMPTY, ZMTP_GREETING, ZMTP_READY
from tests.fixtures.worker_process import ROOT

GARBAGE = os.urandom(65536)


def _flood(conn: socket.socket, mode: str, stop: threading.Event) -> None:
    """Answer whatever comes with `mode`'s flood until the client hangs up."""
    conn.settimeout(5)
    try:
        head, chunk = {
            "huge": (b"\xff\xff\xff\xfe", b"\0" * 65536),
            "full_frames": (b"", (LENGTH.pack(MAX_FRAME) + b"\x91" * MAX_FRAME) * 16),
            "garbage": (b"", GARBAGE),
            "zmtp": (ZMTP_GREETING + ZMTP_READY, MORE_EMPTY * 32768),
            "trickle": (LENGTH.pack(MAX_FRAME), b"x"),
        }[mode]
        if mode == "zmtp":  # greet first, as a ZeroMQ peer does
            conn.sendall(head)
            conn.recv(4096)
        else:
            conn.recv(4096)  # its request
            conn.sendall(head)
        while not stop.is_set():
            conn.sendall(chunk)
            if mode == "trickle":
                time.sleep(0.2)
    except OSError:
        pass
    finally:
        conn.close()


class FakeWorker:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.lst = socket.create_server(("127.0.0.1", 0))
        self.lst.settimeout(0.2)
        self.port = self.lst.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.lst.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_flood, args=(conn, self.mode, self.stop),
                             daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=3)
        self.lst.close()


@pytest.fixture
def fake(request) -> Iterator[FakeWorker]:
    f = FakeWorker(request.param)
    yield f
    f.close()


WHY = {
    "huge": r"the device at 127.0.0.1:\d+ answered with something that is not a TPI Chat "
            r"pairing message \(announced a 4294967294-byte message; a pairing message "
            r"holds 1 to 4096 bytes\); is it a TPI Chat worker\?",
    "full_frames": r"answered with something that is not a TPI Chat pairing message",
    "garbage": r"answered with something that is not a TPI Chat pairing message",
    "zmtp": r"the device at 127.0.0.1:\d+ speaks an older TPI Chat pairing protocol; install "
            r"the same TPI Chat version on both devices\.",
    "trickle": r"no answer from the device at 127.0.0.1:\d+ within 2 s; check that the worker "
               r"is running",
}


@pytest.mark.parametrize("fake", list(WHY), indirect=True)
def test_the_client_holds_a_frame_at_most_and_says_why(fake: FakeWorker, tmp_path) -> None:
    me = make_device(tmp_path, "laptop", "worker")
    tracemalloc.start()
    try:
        t0 = time.monotonic()
        for call in (lambda: pair_with(fake.endpoint, "123-456", me.identity, 2.0,
                                       trust=me.trust),
                     lambda: query_info(fake.endpoint, 2.0)):
            with pytest.raises(PairingError, match=WHY[fake.mode]):
                call()
        took = time.monotonic() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 512 * 1024, f"{peak / MB:.1f} MB"
    assert took < 2 * 2.0 + 1
    assert me.trust.list() == []


def _peak_rss_of(cmd: list[str]) -> tuple[int, str, int]:
    """Run `cmd`; its exit code, stderr and peak RSS in bytes (from wait4)."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(p.stderr.read()))  # type: ignore
    reader.start()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    return p.returncode, "".join(err), usage.ru_maxrss * 1024


@pytest.mark.slow
@pytest.mark.parametrize("fake", ["huge", "zmtp", "garbage"], indirect=True)
def test_tpi_chat_pair_against_a_flooding_fake_worker(fake: FakeWorker, tmp_path) -> None:
    base = [sys.executable, "-m", "core.cli", "pair", "--code", "123-456", "--data-dir",
            str(tmp_path / "m")]
    closed = socket.create_server(("127.0.0.1", 0))
    idle_port = closed.getsockname()[1]
    closed.close()
    code0, err0, rss0 = _peak_rss_of([*base, f"127.0.0.1:{idle_port}"])  # nobody there
    assert code0 == 2 and "nothing answers" in err0
    code, err, rss = _peak_rss_of([*base, f"127.0.0.1:{fake.port}"])
    print(f"\n`tpi-chat pair` vs a {fake.mode} flood: peak RSS {rss / MB:.0f} MB, against "
          f"nothing {rss0 / MB:.0f} MB; said {err.strip()!r}")
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("tpi-chat: ") and re.search(WHY[fake.mode], err), err
    assert rss - rss0 < 20 * MB
