"""A real `tpi-chat worker` process, its CURVE control port fuzzed by its paired master:
mutated real requests of every op (ping, info, run_rank, stop_rank, ship_*) over one
connection, each answered; afterwards it still answers a ping and grew by at most a few
MB of RSS, no file descriptors and no threads (see targets.Bounds)."""

from __future__ import annotations

import pytest

from tests.fixtures.paired_worker import PairedWorker
from tests.fuzz import seeds
from tests.fuzz.conftest import examples, tally
from tests.fuzz.targets import WorkerControlTarget, fuzz_port

TARGET = "tpi-chat worker control port (CURVE)"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = PairedWorker(tmp_path_factory.mktemp("fuzz-worker") / "w")
    yield w
    w.stop()


def test_fuzz_worker_control_port(worker):
    target = WorkerControlTarget(worker)
    t = tally(TARGET, "port")
    try:
        fuzz_port(target, seeds.worker_requests(seeds.manifest()), examples("port"), t)
    finally:
        target.close()
        if target.silent:  # answers lost with their connection (the worker still answered)
            t.notes.append(f"{target.silent} messages got no answer; a fresh ping did")
    assert not worker.tracebacks(), worker.proc.lines[-30:]


test_fuzz_worker_control_port.fuzz_target = TARGET
