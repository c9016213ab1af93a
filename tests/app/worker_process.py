"""Test helper: a real `tpi-chat worker --host 127.0.0.1` process, its console lines in a
queue. Every wait is bounded."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE_RE = re.compile(r"pairing code: (\d{3}-\d{3})")
HELLO_RE = re.compile(r"worker '(.+)' \(([0-9a-f-]{19})\) on ([\d.]+):(\d+), "
                      r"control port (\d+)")


class WorkerProcess:
    """Start with `WorkerProcess(name, data_dir)`; `stop()` ends it with SIGINT (goodbye)."""

    def __init__(self, name: str, data_dir: Path):
        cmd = [sys.executable, "-m", "core.cli", "worker", "--name", name,
               "--host", "127.0.0.1", "--data-dir", str(data_dir)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        hello = self.expect(HELLO_RE)
        self.fingerprint, self.host, self.port = hello[2], hello[3], int(hello[4])
        self.control_port = int(hello[5])
        self.data_dir = Path(data_dir)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pattern: re.Pattern[str], timeout: float = 15.0) -> re.Match[str]:
        """The next console line matching `pattern` (AssertionError after `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError(f"worker exited ({self.proc.returncode}); "
                                         f"it said: {self.seen}") from None
                continue
            self.seen.append(line)
            m = pattern.search(line)
            if m:
                return m
        raise AssertionError(f"worker did not print {pattern.pattern!r}; it said: {self.seen}")

    def code(self) -> str:
        return self.expect(CODE_RE)[1]

    def enroll_in_app(self, memory_budget: int) -> str:
        """Pair this process's app identity (app.store.data_dir()) with the worker using its
        printed code and enroll it in the app's roster; returns the worker's name."""
        from app.device_roster import DeviceRoster
        from app.store import Store, data_dir
        from core.cluster.discovery import probe_manual
        from core.cluster.identity import load_or_create
        from core.cluster.pairing import pair_with

        store = Store()
        try:
            roster = DeviceRoster(store, data_dir())
            peer = pair_with(f"tcp://{self.host}:{self.port}", self.code(),
                             load_or_create(data_dir()), trust=roster.trust)
            roster.enroll(peer.public_key, probe_manual(self.host, self.port), memory_budget)
            return peer.name
        finally:
            store.close()

    def kill(self) -> None:
        """SIGKILL: the worker vanishes without a word (a pulled plug)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT (clean exit with an mDNS goodbye), SIGKILL if it does not end in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
