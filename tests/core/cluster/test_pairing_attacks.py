"""A stranger on the LAN against a real `tpi-chat worker` process's pairing port.

(a) floods: ZMTP multipart floods (what grew the ZeroMQ pairing port from 237 MB to
    1042 MB in 3 s, 749 MB staying), huge length prefixes, streams of full frames and
    hundreds of held connections from 20 addresses at once: the worker's RSS grows by
    less than 50 MB, comes back within 10% of where it started, and its file
    descriptors come back too;
(b) guessing: no pairing (and no SPAKE2) outside a window the user opened, a lock-out
    after 3 wrong codes, and the right code refused after it until the user opens
    pairing again;
(c) slot hogging: stalled hellos and silent connections from 8 addresses filling every
    slot do not keep a real master out, and are dropped after the idle timeout; a
    second hello on a connection ends it, and hellos per address are rate-limited.
Each test prints its numbers (pytest -s shows them); docs/SECURITY.md quotes them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import psutil
import pytest

from core.cluster import pairing_code
from core.cluster.pairing import PairingError
from core.cluster.pairing_client import pair_with, query_info
from core.cluster.pairing_wire import LENGTH, MAX_FRAME, pack
from tests.core.cluster.devices import make_device
from tests.fixtures.pairing_attacks import (
    MB,
    MORE_EMPTY,
    ZMTP_GREETING,
    ZMTP_READY,
    RssSampler,
    connect,
    hold_many,
    settle,
    stream,
)
from tests.fixtures.worker_process import ROOT, WorkerProcess

pytestmark = pytest.mark.slow

FLOOD_S = 6.0
IDLE_S = 5.0  # pairing_wire.Limits.idle_seconds


@pytest.fixture
def master(tmp_path):
    return make_device(tmp_path, "laptop", "worker")


def _wrong(code: str) -> str:
    return f"{(int(code.replace('-', '')) + 1) % 10 ** 6:06d}"


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


# ---------------------------------------------------------------- (a) memory


def test_pre_pairing_floods_leave_the_worker_small(tmp_path, master):
    w = WorkerProcess("victim", tmp_path / "w")  # pairing open: the most exposed it gets
    try:
        proc = psutil.Process(w.proc.pid)
        assert query_info(w.endpoint)["name"] == "victim"  # warm up both paths
        with pytest.raises(PairingError, match="2 tries left"):
            pair_with(w.endpoint, _wrong(w.codes()[-1]), master.identity, trust=None)
        time.sleep(1.0)
        fds0 = proc.num_fds()
        sent: list[int] = []
        held: list = []
        with RssSampler(w.proc.pid) as rss:
            start = rss.rss()
            until = time.monotonic() + FLOOD_S
            jobs = [
                *[(ZMTP_GREETING + ZMTP_READY, MORE_EMPTY, f"127.0.0.{i}") for i in (2, 3)],
                (b"\xff\xff\xff\xff", b"\0", "127.0.0.4"),  # a 4 GB frame announced
                (b"", LENGTH.pack(MAX_FRAME) + b"A" * MAX_FRAME, "127.0.0.5"),  # full frames
                (b"", b"\x00\x00\x10", "127.0.0.6"),  # prefixes of 1 MB frames
            ]
            threads = [threading.Thread(target=lambda j=j: sent.append(
                stream(w.host, w.port, j[0], j[1], until, j[2]))) for j in jobs]
            threads.append(threading.Thread(target=lambda: held.extend(hold_many(
                w.host, w.port, 400, [f"127.0.0.{i}" for i in range(10, 30)],
                LENGTH.pack(MAX_FRAME) + b"B" * (MAX_FRAME - 1), until))))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            n_held = len(held)
            for s in held:
                s.close()
            peak = rss.peak
        after = settle(rss.rss, int(start * 1.10), 15.0)
        fds_back = _wait(lambda: proc.num_fds() <= fds0 + 1, 10.0)
        print(f"\nflood: {sum(sent) / MB:.0f} MB sent in {FLOOD_S:g} s, {n_held} connections "
              f"held; worker RSS {start / MB:.0f} MB -> peak {peak / MB:.0f} MB "
              f"(+{(peak - start) / MB:.1f}) -> {after / MB:.0f} MB after; fds {fds0} -> "
              f"{proc.num_fds()}")
        assert sum(sent) > 50 * MB  # the attack did run
        assert peak - start < 50 * MB
        assert after <= start * 1.10
        assert fds_back
        # and it still serves: info, and the user's code pairs
        assert w.proc.poll() is None and query_info(w.endpoint)["name"] == "victim"
        pair_with(w.endpoint, w.codes()[-1], master.identity, trust=master.trust)
        w.expect(re.compile(r"paired with 'laptop'"))
    finally:
        w.stop()


# ---------------------------------------------------------------- (b) guessing


def test_code_guessing_gets_nowhere_without_the_user(tmp_path, master):
    w = WorkerProcess("guarded", tmp_path / "w", pair=False)
    try:
        w.expect(re.compile(r"pairing is closed: press P here or run `tpi-chat worker --pair`"))
        # Closed: every guess is refused before any cryptography. (20: the limit on new
        # connections from one address is 30 a minute, and the user's own pairing below
        # comes from this address too.)
        t0 = time.monotonic()
        for tries in range(1, 21):
            with pytest.raises(PairingError, match=r"'guarded' is not accepting pairing right "
                                                   r"now: open pairing on the device"):
                pair_with(w.endpoint, f"{tries:06d}", master.identity, trust=master.trust)
        rate = tries / (time.monotonic() - t0)
        assert not any("wrong pairing code" in x for x in w.lines)

        # The user presses P: three wrong codes lock it.
        code = w.open_pairing()
        msgs = []
        for _ in range(3):
            with pytest.raises(PairingError) as e:
                pair_with(w.endpoint, _wrong(code), master.identity, trust=master.trust)
            msgs.append(str(e.value))
        assert msgs == ["'guarded' refused the code (2 tries left).",
                        "'guarded' refused the code (1 try left).",
                        "'guarded' refused the code and is now locked: open pairing again on "
                        "the device (it shows a new code)."]
        w.expect(re.compile(r"pairing closed after 3 wrong codes \(locked\): press P here"))
        # Locked: the right code is refused too, as long as the user does nothing.
        time.sleep(1.0)
        with pytest.raises(PairingError, match="not accepting pairing right now"):
            pair_with(w.endpoint, code, master.identity, trust=master.trust)
        stored = w.data_dir / "trusted-masters.json"
        assert master.trust.list() == [] and (not stored.exists()
                                              or "laptop" not in stored.read_text())

        # The user opens pairing again: a new code, which pairs.
        new = w.open_pairing()
        pair_with(w.endpoint, new, master.identity, trust=master.trust)
        w.expect(re.compile(r"paired with 'laptop'"))
        w.expect(re.compile(r"pairing closed: a code pairs one master"))
        print(f"\nguessing: {tries} guesses while closed ({rate:.0f}/s), all refused; "
              f"3 wrong codes locked the window; 0 guesses without the user acting")
    finally:
        w.stop()


def test_pairing_opened_from_another_shell_on_a_running_worker(tmp_path, master):
    """The headless mini PC: the worker runs as a service; the user logs in and runs
    `tpi-chat worker --pair`, which opens pairing on the running worker."""
    w = WorkerProcess("headless", tmp_path / "w", pair=False)
    try:
        run = subprocess.run([sys.executable, "-m", "core.cli", "worker", "--data-dir",
                              str(w.data_dir), "--pair", "2"], capture_output=True, text=True,
                             timeout=60, cwd=ROOT)
        assert run.returncode == 0, run.stderr
        m = re.search(r"pairing open on the running worker 'headless' at 127.0.0.1:(\d+) "
                      r"until \d\d:\d\d; pairing code: (\d{3}-\d{3})", run.stdout)
        assert m and int(m[1]) == w.port, run.stdout
        assert w.codes()[-1] == m[2]  # its console (the service's log) says so too
        pair_with(w.endpoint, m[2], master.identity, trust=master.trust)
        assert not (w.data_dir / "pairing-open.json").exists()  # withdrawn on close
        # A second daemon on the same folder is refused, without a traceback.
        run = subprocess.run([sys.executable, "-m", "core.cli", "worker", "--data-dir",
                              str(w.data_dir)], capture_output=True, text=True, timeout=60,
                             cwd=ROOT)
        assert run.returncode == 2 and "a worker already runs with the data folder" in \
            run.stderr and "Traceback" not in run.stderr
    finally:
        w.stop()


# ---------------------------------------------------------------- (c) slots


def _hello() -> bytes:
    return pack("hello", {"name": "squatter", "pake": pairing_code.master_pake(
        "000000").start()})


def _hung_up(s, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_stalled_strangers_do_not_keep_a_master_out(tmp_path, master):
    w = WorkerProcess("slots", tmp_path / "w")
    try:
        proc = psutil.Process(w.proc.pid)
        time.sleep(0.5)
        fds0 = proc.num_fds()
        squatters = []
        for i in range(2, 10):  # 8 addresses x 4 connections: every slot there is
            for k in range(4):
                s = connect(w.host, w.port, f"127.0.0.{i}")
                if k < 2:
                    s.sendall(_hello())  # an exchange started and left hanging
                    s.settimeout(5)
                    assert s.recv(4096)  # its challenge
                squatters.append(s)
        t0 = time.monotonic()
        pair_with(w.endpoint, w.codes()[-1], master.identity, trust=master.trust)
        took = time.monotonic() - t0
        assert took < 3.0
        # The squatters are dropped once idle, all of them.
        t1 = time.monotonic()
        assert all(_hung_up(s, IDLE_S + 3) for s in squatters)
        dropped = time.monotonic() - t1
        for s in squatters:
            s.close()
        assert _wait(lambda: proc.num_fds() <= fds0 + 1, 5.0)
        print(f"\nslots: 32 squatting connections, a real pairing took {took:.2f} s; "
              f"all squatters dropped within {dropped:.1f} s; fds {fds0} -> "
              f"{proc.num_fds()}")
    finally:
        w.stop()


def test_repeated_hellos_count_as_attempts(tmp_path, master):
    w = WorkerProcess("hellos", tmp_path / "w")
    try:
        s = connect(w.host, w.port, "127.0.0.2")
        with s:
            s.sendall(_hello())
            s.settimeout(5)
            assert b"challenge" in s.recv(4096)
            s.sendall(_hello())
            assert b"one pairing attempt per connection" in s.recv(4096)
            assert _hung_up(s, 3)
        # one address: 10 attempts per 10 minutes, then it is told to slow down
        for _ in range(10):
            with connect(w.host, w.port, "127.0.0.3") as s:
                s.sendall(_hello())
                s.settimeout(5)
                assert b"challenge" in s.recv(4096)
        with connect(w.host, w.port, "127.0.0.3") as s:
            s.sendall(_hello())
            s.settimeout(5)
            assert b"slow_down" in s.recv(4096)
        # nobody else is slowed down, and no code was tested
        pair_with(w.endpoint, w.codes()[-1], master.identity, trust=master.trust)
        assert not any("wrong pairing code" in x for x in w.lines)
    finally:
        w.stop()


def test_held_connections_cost_the_worker_at_most_the_cap_in_descriptors(tmp_path, master):
    """300 silent connections from 30 addresses, all held open at once: the worker holds
    at most 32 of them (pairing_wire.Limits.max_conns, the oldest evicted), so its file
    descriptors stay within 32 of the start while they are open, and every one is closed
    within the idle timeout."""
    w = WorkerProcess("fds", tmp_path / "w")
    try:
        proc = psutil.Process(w.proc.pid)
        time.sleep(0.5)
        fds0 = proc.num_fds()
        held = hold_many(w.host, w.port, 300, [f"127.0.1.{i}" for i in range(1, 31)],
                         b"\x00", time.monotonic() + 30)
        time.sleep(1.0)  # let the server accept (and evict) all it will
        during = proc.num_fds()
        t0 = time.monotonic()
        assert _wait(lambda: proc.num_fds() <= fds0 + 1, IDLE_S + 5)
        dropped = time.monotonic() - t0
        for s in held:
            s.close()
        print(f"\nfds: {len(held)} connections held; worker fds {fds0} -> {during} while "
              f"held -> {proc.num_fds()} within {dropped:.1f} s")
        assert len(held) >= 250  # the attack did run
        assert during <= fds0 + 32 + 2
        assert query_info(w.endpoint)["name"] == "fds"
    finally:
        w.stop()
