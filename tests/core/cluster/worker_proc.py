"""Test helper: a real `tpi-chat worker` process on loopback, its console parsed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.cluster.identity import Identity
from core.cluster.pairing import pair_with
from core.cluster.session import WorkerSpec
from core.cluster.trust import TrustStore

_START = re.compile(r"worker '(.+)' \((.+)\) on ([\d.]+):(\d+), control port (\d+)")
_CODE = re.compile(r"pairing code: (\d{3}-\d{3})")


class WorkerProc:
    def __init__(self, data_dir: Path, name: str, timeout: float = 30.0):
        self.data_dir = data_dir
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "worker", "--name", name, "--host", "127.0.0.1",
             "--data-dir", str(data_dir), "--memory-budget", "1GB"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self.codes() and time.monotonic() < deadline:
            assert self.proc.poll() is None, "\n".join(self.lines)
            time.sleep(0.05)
        m = next(_START.match(x) for x in self.lines if _START.match(x))
        self.port, self.ctl_port = int(m.group(4)), int(m.group(5))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def codes(self) -> list[str]:
        return [m.group(1) for x in list(self.lines) if (m := _CODE.search(x))]

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def pair(self, me: Identity, trust: TrustStore) -> WorkerSpec:
        peer = pair_with(self.endpoint, self.codes()[-1], me, trust=trust)
        return WorkerSpec(self.name, f"tcp://127.0.0.1:{self.ctl_port}", peer.public_key,
                          2**30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
