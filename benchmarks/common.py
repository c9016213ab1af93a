"""Shared benchmark helpers: the machine, a watched subprocess, medians, JSON output.

`run_watched` runs one command and samples its whole process tree every 100 ms with psutil:
peak RSS per process (the larger of the sampled RSS and the kernel's own high-water mark
VmHWM, which catches spikes between samples), the peak of the sum over the tree, and per
process the last seen disk read bytes (/proc/<pid>/io) and major page faults. Around the
run it also takes the difference of getrusage(RUSAGE_CHILDREN): page faults and block reads
of every process the command waited for, dead or alive, which no sampling can miss.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
PY = sys.executable
SAMPLE_S = 0.1
MB = 1 << 20


def bench_env() -> dict[str, str]:
    """Environment of benchmark children: the repo on the path, shards under benchmarks/out."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TPI_CHAT_CACHE"] = str(OUT / "cache")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def machine() -> dict:
    """CPU, cores, RAM, OS, library versions and the date, for RESULTS.md.

    Versions come from package metadata: importing torch here would make this process big,
    and its children would inherit that peak in their ru_maxrss (see models.py).
    """
    from importlib.metadata import version

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "code": code_state(),
    }


def code_state() -> str:
    """The commit measured, and the engine files changed in the work tree since (others
    commit to this tree while benchmarks run)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = [ln[3:] for ln in git("status", "--porcelain", "--", "core").splitlines()]
    if not dirty:
        return head
    more = ", ..." if len(dirty) > 4 else ""
    return (f"{head} + uncommitted changes to {len(dirty)} files of core/ "
            f"({', '.join(dirty[:4])}{more})")


@dataclass
class ProcSample:
    """What was seen of one process of the tree."""

    cmd: str
    rank: int = 0  # from `--rank N` on its command line; 0 for the command itself
    peak_rss_mb: float = 0.0
    read_bytes: int = 0
    majflt: int = 0


@dataclass
class Watched:
    """One finished command: its output, its wall time and what its processes used."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    procs: dict[int, ProcSample] = field(default_factory=dict)
    peak_tree_rss_mb: float = 0.0  # max over samples of the sum of RSS over the tree
    ru_majflt: int = 0  # of all waited-for descendants (getrusage RUSAGE_CHILDREN)
    ru_inblock_bytes: int = 0  # block reads of the same, in bytes (512-byte units)

    def last_json(self) -> dict:
        """The last stdout line that parses as a JSON object."""
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    continue
        raise RuntimeError(f"no JSON line in output; stderr tail:\n{self.stderr[-2000:]}")

    def io_summary(self) -> dict:
        by_rank = sorted(self.procs.values(), key=lambda p: p.rank)
        return {
            "peak_rss_mb_per_process": [round(p.peak_rss_mb, 1) for p in by_rank],
            "sum_peak_rss_mb": round(sum(p.peak_rss_mb for p in self.procs.values()), 1),
            "peak_tree_rss_mb": round(self.peak_tree_rss_mb, 1),
            "read_mb_sampled": round(sum(p.read_bytes for p in self.procs.values()) / MB, 1),
            "majflt_sampled": sum(p.majflt for p in self.procs.values()),
            "ru_majflt": self.ru_majflt,
            "ru_read_mb": round(self.ru_inblock_bytes / MB, 1),
            "wall_s": round(self.wall_s, 2),
        }


def _majflt(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[9])  # field 12: majflt
    except (OSError, IndexError, ValueError):
        return 0


def _hwm_mb(pid: int) -> float:
    """The kernel's peak RSS of this process image (VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _rank_of(cmdline: list[str]) -> int:
    try:
        return int(cmdline[cmdline.index("--rank") + 1])
    except (ValueError, IndexError):
        return 0


def _sample(root: psutil.Process, seen: dict[int, ProcSample]) -> float:
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in tree:
        try:
            rss = p.memory_info().rss / MB
            s = seen.get(p.pid)
            if s is None:
                cl = p.cmdline()
                s = seen[p.pid] = ProcSample(cmd=" ".join(cl[1:5]), rank=_rank_of(cl))
            s.peak_rss_mb = max(s.peak_rss_mb, rss, _hwm_mb(p.pid))
            s.read_bytes = max(s.read_bytes, p.io_counters().read_bytes)
            s.majflt = max(s.majflt, _majflt(p.pid))
            total += rss
        except psutil.Error:
            continue
    return total


def run_watched(cmd: list[str], timeout_s: float = 1800, env: dict | None = None) -> Watched:
    """Run `cmd` to the end, sampling its process tree; raise on a non-zero exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or bench_env(), cwd=ROOT)
    out: dict[str, str] = {}
    readers = [threading.Thread(target=lambda k=k, f=f: out.__setitem__(k, f.read()))
               for k, f in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    root = psutil.Process(proc.pid)
    seen: dict[int, ProcSample] = {}
    peak_tree = 0.0
    while proc.poll() is None:
        peak_tree = max(peak_tree, _sample(root, seen))
        if time.perf_counter() - t0 > timeout_s:
            proc.kill()
        time.sleep(SAMPLE_S)
    for r in readers:
        r.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    w = Watched(proc.returncode, out.get("stdout", ""), out.get("stderr", ""), wall, seen,
                peak_tree, after.ru_majflt - before.ru_majflt,
                (after.ru_inblock - before.ru_inblock) * 512)
    if w.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... exited {w.returncode}:\n{w.stderr[-3000:]}")
    return w


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def spread(xs: list[float]) -> float | None:
    """(max - min) / median: how noisy repeated runs were."""
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return None
    m = statistics.median(xs)
    return round((max(xs) - min(xs)) / m, 3) if m else None


def write_json(name: str, data: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(data, indent=2))
    return path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
