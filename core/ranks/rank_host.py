"""Who runs a worker rank: a local process here, or (core/cluster) a peer device.

LocalCluster starts every rank r > 0 through a `RankHost`, then runs the same control
handshake and data plane with all of them, so local and remote ranks share one code path.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from core.comm.curve import CurveClientConfig, Keys
from core.progress import Progress
from core.ranks.rank_process import RankSecrets


class RankHost(Protocol):
    """One worker rank's home; `name` is what error messages and the Devices panel show."""

    name: str
    public_key: str  # the CURVE key the rank connects with: the only one its slot admits
    same_machine: bool  # runs on our cores (a local process, or a worker on this machine)
    peer_host: str | None  # the address rank 0 is dialled from; None: this machine

    def start(self, rank: int, control: str, rank_dir: Path, report: Progress) -> None:
        """Start rank `rank` (connecting to `control`) on the shards of `rank_dir`."""

    def exit_reason(self) -> str | None:
        """None while the rank runs; else why it stopped, for a user ("exited with code 1")."""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the rank (it was sent "stop" already): wait, then force. Safe to repeat."""


def rank_command(control: str, rank: int, curve_stdin: bool = True) -> list[str]:
    """How to start a worker rank: the frozen app re-runs itself, else `python -m core.cli`."""
    base = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m",
                                                                  "core.cli"]
    cmd = [*base, "rank", "--control", control, "--rank", str(rank)]
    return cmd + ["--curve-stdin"] if curve_stdin else cmd


def spawn_rank(control: str, rank: int, log_path: Path, secrets: RankSecrets,
               preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen:
    """Start `tpi-chat rank` with its output in `log_path`; CURVE secrets go in on stdin
    (a pipe: never argv, the environment or a file, which other users can read)."""
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(rank_command(control, rank), stdin=subprocess.PIPE,
                                stdout=log, stderr=log, preexec_fn=preexec_fn)
    assert proc.stdin is not None
    proc.stdin.write(secrets.to_json().encode())
    proc.stdin.close()
    return proc


class LocalRankHost:
    """A rank process on this machine; it gets its (ephemeral) key pair on stdin."""

    same_machine = True
    peer_host = None

    def __init__(self, logs: Path, keys: Keys, server_key: str, rank: int = 0):
        self.name = f"local rank {rank}" if rank else "local rank"
        self.keys = keys
        self.public_key = keys.public_key
        self.server_key = server_key
        self.logs = logs
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self, rank: int, control: str, rank_dir: Path, report: Progress) -> None:
        self.name = f"local rank {rank}"
        self.log_path = self.logs / f"rank{rank}.log"
        self.proc = spawn_rank(control, rank, self.log_path,
                               RankSecrets(CurveClientConfig(self.keys, self.server_key)))

    def exit_reason(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"exited with code {self.proc.returncode}: {self._log_tail()}"

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip() if self.log_path else ""
            return text.splitlines()[-1] if text else "no output"
        except OSError:
            return "no log"

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
