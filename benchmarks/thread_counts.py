"""Per-thread CPU time and voluntary context switches of a process, from /proc (Linux).

Counts, not wall-clock, so they mean something on a loaded machine: an OpenMP thread
that libgomp lets spin does well under one voluntary switch per token, one it makes sleep
between parallel regions ~190 (core/serve/engine_worker.py). Used by profile_serve.py,
profile_app_api.py and the app's API test.
"""

from __future__ import annotations

import re
from pathlib import Path

_VOLUNTARY = re.compile(r"^voluntary_ctxt_switches:\s*(\d+)", re.M)


def thread_counts(pid: int | str = "self") -> dict[int, tuple[int, int]]:
    """native thread id -> (CPU ns, voluntary context switches), for every thread of pid."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns = int((task / "schedstat").read_text().split()[0])
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (ns, int(_VOLUNTARY.search(status).group(1)))
    return out


def per_token(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
              n: int) -> list[tuple[float, float, int]]:
    """(CPU us, voluntary switches, thread id) of each thread per one of `n` tokens, between
    two thread_counts(); busiest first. A thread born in between counts from zero."""
    return sorted((((ns - before.get(tid, (0, 0))[0]) / n / 1e3,
                    (vol - before.get(tid, (0, 0))[1]) / n, tid)
                   for tid, (ns, vol) in after.items()), reverse=True)
