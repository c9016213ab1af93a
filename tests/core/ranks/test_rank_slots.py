"""Only the rank a slot was planned for takes it (issue 13): another user of this
computer who watches for new loopback listeners, and a paired device after another
device's rank. Real processes on real sockets; the attackers are
tests/fixtures/rank_hijack.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from core.comm.curve import CurveClientConfig, CurveServerConfig, Keys
from core.engine.options import RunOptions
from core.errors import PeerError
from core.ranks.local_cluster import LocalCluster
from core.ranks.rank_host import LocalRankHost
from core.ranks.rank_process import RankSecrets
from tests.fixtures.tiny_models import make_tiny_model

ROOT = Path(__file__).resolve().parents[3]
IDS = [5, 6, 7, 8]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama"), "llama", num_hidden_layers=2)


def _solo_logits(model: Path) -> torch.Tensor:
    """What one rank alone computes for IDS: the output every plan must give."""
    solo = LocalCluster(model, RunOptions(ranks=1, context=64, threads=1)).start()
    try:
        return solo.step(IDS, 0)
    finally:
        solo.close()


@pytest.mark.slow
def test_another_local_user_gets_no_token_no_hidden_state_and_no_slot(tiny):
    """The watcher runs as uid 65534 in a network namespace of its own with the victim, a
    default local 2-rank cluster (no paired device). It once joined as rank 1 before the
    real rank had imported torch, got the token and the prompt's hidden states, and its
    partial sums decided the output."""
    if os.geteuid() != 0:
        pytest.skip("needs root: another uid and a network namespace")
    if not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs unshare and ip")
    proc = subprocess.run(["unshare", "--net", sys.executable, "-m",
                           "tests.fixtures.rank_hijack", "scenario", str(tiny)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    tried = [w for w in r["watcher"] if "endpoint" in w]
    assert tried, r  # it saw the cluster's listeners and went for them
    for w in tried:
        assert not (w["setup"] or w["token"] or w["joined"] or w["hidden"]), w
    assert r["start_error"] is None and r["equal"], r


class _LateHost(LocalRankHost):
    """A real local rank on a slower device: its process starts 2 s late."""

    def start(self, rank, control, rank_dir, report):
        self._timer = threading.Timer(2.0, LocalRankHost.start,
                                      (self, rank, control, rank_dir, report))
        self._timer.start()

    def stop(self, timeout=5.0):
        self._timer.cancel()
        self._timer.join()
        super().stop(timeout)


class _ThiefHost(LocalRankHost):
    """A paired device with its own admitted key and rank, which first asks the data
    plane for rank `steal` (tests/fixtures/rank_hijack.py thief)."""

    def __init__(self, logs, keys, server_key, rank, steal, report):
        super().__init__(logs, keys, server_key, rank)
        self.steal, self.report = steal, report

    def start(self, rank, control, rank_dir, report):
        self.log_path = self.logs / f"thief{rank}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.fixtures.rank_hijack", "thief", control,
                 str(rank), str(self.steal)], cwd=ROOT, stdin=subprocess.PIPE,
                stdout=log, stderr=log, env={**os.environ, "TPI_THIEF_REPORT": str(self.report)})
        self.proc.stdin.write(RankSecrets(CurveClientConfig(self.keys, self.server_key))
                              .to_json().encode())
        self.proc.stdin.close()


@pytest.mark.slow
def test_a_paired_device_cannot_take_another_devices_rank(tiny, tmp_path):
    """Device B (rank 2) holds the session token like every rank; its data-plane hello
    for rank 1, sent before device A's, once took A's slot (A was refused)."""
    want = _solo_logits(tiny)
    server, a, b = Keys.generate(), Keys.generate(), Keys.generate()
    report = tmp_path / "thief.json"
    hosts = [_LateHost(tmp_path, a, server.public_key, 1),
             _ThiefHost(tmp_path, b, server.public_key, 2, steal=1, report=report)]
    c = LocalCluster(tiny, RunOptions(ranks=3, context=64, threads=1), hosts=hosts,
                     curve=CurveServerConfig(server, {a.public_key, b.public_key}.__contains__))
    try:
        error, got = None, None
        try:
            got = c.start().step(IDS, 0)
        except PeerError as e:
            error = e
        deadline = time.monotonic() + 30
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        thief = json.loads(report.read_text())
        assert not thief["stolen"], (thief, error)
        assert "rank 1" in thief["refusal"], thief
        assert error is None, error
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    finally:
        c.close()
