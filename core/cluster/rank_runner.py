"""The worker daemon's rank processes: start one per run_rank, report, stop, reap.

Bounded on purpose (a daemon runs for weeks): at most MAX_RUNNING processes, and only
the last exit code per (master, rank) is remembered, for at most MAX_REMEMBERED ranks.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from pathlib import Path

from core.comm.curve import CurveClientConfig, KeyPair
from core.ranks.rank_host import spawn_rank
from core.ranks.rank_process import RankSecrets

MAX_RUNNING = 8
MAX_REMEMBERED = 64
TAIL_BYTES = 4096  # of a rank's log, to find its last line
MAX_WORDS = 300  # characters of that line sent to the master


def log_tail(path: Path) -> str:
    """The last non-empty line of a log (bounded read), or "" when there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:MAX_WORDS] if lines else ""


def _die_with_parent() -> None:
    """Linux: the rank dies with the daemon (a killed worker must not leave a rank behind)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class RankRunner:
    """Rank processes keyed by (master public key, rank)."""

    def __init__(self, identity: KeyPair, host: str, logs: Path):
        self.identity = identity
        self.host = host
        self.logs = logs
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}
        self.exits: dict[tuple[str, int], int] = {}
        self.dirs: dict[tuple[str, int], Path] = {}  # what each running rank reads

    def start(self, master_key: str, rank: int, control: str, rank_dir: Path) -> None:
        self.reap()
        self.stop(master_key, rank)  # a re-plan reuses rank numbers
        if len(self.procs) >= MAX_RUNNING:
            raise RuntimeError(f"this worker already runs {MAX_RUNNING} ranks")
        self.logs.mkdir(parents=True, exist_ok=True)
        secrets = RankSecrets(CurveClientConfig(self.identity, master_key), rank_dir, self.host)
        self.dirs[(master_key, rank)] = Path(rank_dir)
        self.procs[(master_key, rank)] = spawn_rank(
            control, rank, self.logs / f"rank{rank}.log", secrets,
            _die_with_parent if sys.platform == "linux" else None)

    def status(self, master_key: str) -> dict[str, int]:
        """{"<rank>": exit code, or -1 while running} for one master's ranks."""
        self.reap()
        out = {str(r): c for (k, r), c in self.exits.items() if k == master_key}
        out.update({str(r): -1 for (k, r) in self.procs if k == master_key})
        return out

    def last_words(self, master_key: str) -> dict[str, str]:
        """{"<rank>": the last line its log holds} for one master's failed ranks: the
        master quotes it on the device's card."""
        return {str(r): log_tail(self.logs / f"rank{r}.log")
                for (k, r), c in self.exits.items() if k == master_key and c != 0}

    def uses(self, rank_dir: Path) -> bool:
        """Does a running rank read `rank_dir`? (its shard must not be deleted)"""
        self.reap()
        return Path(rank_dir) in self.dirs.values()

    def reap(self) -> None:
        for key, p in list(self.procs.items()):
            if p.poll() is not None:
                del self.procs[key]
                self._remember(key, p.returncode)

    def _remember(self, key: tuple[str, int], code: int) -> None:
        self.dirs.pop(key, None)  # only running ranks' folders are kept from deletion
        self.exits.pop(key, None)
        self.exits[key] = code
        while len(self.exits) > MAX_REMEMBERED:
            del self.exits[next(iter(self.exits))]

    def stop(self, master_key: str, rank: int | None = None, timeout: float = 3.0) -> None:
        """Stop one rank (or all of a master's): terminate, wait, then kill."""
        keys = [k for k in self.procs if k[0] == master_key and (rank is None or k[1] == rank)]
        for k in keys:
            self.procs[k].terminate()
        for k in keys:
            p = self.procs.pop(k)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            self._remember(k, p.returncode)

    def stop_all(self) -> None:
        for master in {k for k, _ in self.procs}:
            self.stop(master)
