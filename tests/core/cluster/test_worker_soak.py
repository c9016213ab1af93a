"""A worker serving session after session must not grow: fds, threads, children, memory.

`tpi-chat worker` is meant to run for days; each session ships (once), starts a rank
process, generates and stops it. Leaks there would add up over days of chats.
"""

from __future__ import annotations

import time

import psutil
import pytest

from core.cluster.session import Session
from core.engine.generate import Generator
from core.engine.options import RunOptions
from core.engine.sampler import SamplingParams
from tests.core.cluster.devices import make_device
from tests.fixtures.tiny_models import make_tiny_model

SESSIONS = 6


def _sample(p: psutil.Process) -> tuple[float, int, int, int]:
    deadline = time.monotonic() + 15  # the rank process exits and the daemon reaps it
    while p.children() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    return p.memory_info().rss / 2**20, p.num_fds(), p.num_threads(), len(p.children())


@pytest.mark.slow
def test_worker_does_not_grow_over_sessions(tmp_path, remote_workers):
    model = make_tiny_model(tmp_path / "m", "llama", num_hidden_layers=2)
    master = make_device(tmp_path, "master", "worker")
    w = remote_workers.start("w", tmp_path / "w", "1GB")
    try:
        spec = w.pair(master.identity, master.trust)
        proc = psutil.Process(w.proc.pid)
        samples = []
        for _ in range(SESSIONS):
            s = Session(model, master.identity, [spec], master_budget=2**30,
                        opts=RunOptions(context=64, threads=1)).start()
            try:
                Generator(s, {2}).generate([1, 5, 9], SamplingParams(
                    temperature=0, max_new_tokens=4))
            finally:
                s.close()
            samples.append(_sample(proc))
        print("rss MB, fds, threads, children per session:", samples)
        warm, last = samples[1], samples[-1]  # session 1 imports and ships: not steady state
        assert last[1:] == warm[1:], samples  # same fds and threads, no children left
        assert last[3] == 0, samples
        assert last[0] - warm[0] < 16, samples
    finally:
        w.stop()
