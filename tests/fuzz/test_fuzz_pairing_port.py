"""A real `tpi-chat worker` process, its pairing port (plain TCP, open to anyone, pairing
window open) fuzzed by strangers: mutated info / hello / confirm frames and mutated wire
bytes, each on a connection of its own; afterwards it still answers `info` and grew by
at most a few MB of RSS, no file descriptors and no threads (see targets.Bounds)."""

from __future__ import annotations

import pytest

from tests.fixtures.worker_process import WorkerProcess
from tests.fuzz import seeds
from tests.fuzz.conftest import examples, tally
from tests.fuzz.pairing_target import PairingPortTarget
from tests.fuzz.targets import fuzz_port

TARGET = "tpi-chat worker pairing port (TCP)"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = WorkerProcess("fuzz-pairing", tmp_path_factory.mktemp("fuzz-pairing") / "w")
    yield w
    w.stop()


def test_fuzz_worker_pairing_port(worker):
    fuzz_port(PairingPortTarget(worker), seeds.pairing_requests(), examples("port"),
              tally(TARGET, "port"))
    bugs = [i for i, x in enumerate(worker.lines) if "Traceback" in x]
    assert not bugs, "\n".join(worker.lines[max(0, bugs[0] - 2):bugs[0] + 40])  # in full


test_fuzz_worker_pairing_port.fuzz_target = TARGET
