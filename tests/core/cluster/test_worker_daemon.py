"""`tpi-chat worker` as a real process: discovery, pairing by the printed code, and
strangers who get nothing (plaintext, pickle, unknown CURVE keys, random bytes, ../)."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import time

import pytest
import zmq

from core.cluster.discovery import Browser
from core.cluster.identity import Identity
from core.cluster.pairing import PairingError
from core.cluster.pairing_client import pair_with
from core.cluster.worker_protocol import TO_MASTER
from core.comm.control import ControlClient
from core.comm.curve import CurveClientConfig
from tests.core.cluster.devices import make_device
from tests.fixtures.worker_process import WorkerProcess

WAIT_S = 15.0


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    base = tmp_path_factory.mktemp("workers")
    ws = [WorkerProcess(n, base / n, "1GB") for n in ("alpha", "beta")]
    yield ws
    for w in ws:
        w.stop()


def _wait(cond, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def _files(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_discovered_paired_by_printed_code_wrong_code_refused(workers, tmp_path):
    alpha, beta = workers
    seen = {}  # by fingerprint: another test run may advertise an 'alpha' on lo too
    with Browser(lambda e: seen.__setitem__(e.peer.fingerprint, e.peer),
                 interfaces=["127.0.0.1"]):
        assert _wait(lambda: {alpha.fingerprint, beta.fingerprint} <= set(seen)), seen
    assert seen[alpha.fingerprint].name == "alpha"
    assert seen[alpha.fingerprint].control_port == alpha.control_port
    assert seen[alpha.fingerprint].mem_total <= 2**30  # the budget is what it offers

    master = make_device(tmp_path, "master", "worker")
    with pytest.raises(PairingError, match="tries left"):
        wrong = "000-000" if alpha.codes()[-1] != "000-000" else "111-111"
        pair_with(alpha.endpoint, wrong, master.identity, trust=master.trust)
    spec = alpha.pair(master.identity, master.trust)
    assert master.trust.contains(spec.public_key)
    assert _wait(lambda: any("paired with 'master'" in x for x in alpha.lines))
    # paired: the control port answers ping over CURVE with our key
    c = ControlClient(spec.endpoint, ops=TO_MASTER,
                      curve=CurveClientConfig(master.identity, spec.public_key))
    try:
        c.send("ping", {"t": 1.5})
        msg = c.recv(timeout=5)
        assert msg is not None and msg.op == "pong" and msg.meta["t"] == 1.5
    finally:
        c.close()


@pytest.mark.slow
def test_strangers_get_nothing(workers, tmp_path):
    beta = workers[1]
    before = _files(beta.data_dir)
    ctx = zmq.Context()
    try:
        # plaintext and pickle frames to the CURVE control port: the handshake fails
        for frames in ([b"ping"], [pickle.dumps({"op": "run_rank"})]):
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.connect(f"tcp://127.0.0.1:{beta.control_port}")
            s.send_multipart(frames)
            assert not s.poll(500)
            s.close()
        # a CURVE client whose key the worker never paired
        stranger = Identity.generate("stranger")
        c = ControlClient(f"tcp://127.0.0.1:{beta.control_port}", ops=TO_MASTER,
                          curve=CurveClientConfig(stranger, _worker_key(beta)))
        c.send("run_rank", {"split_id": "../../x", "rank": 1, "control": "tcp://1.2.3.4:5"})
        assert c.recv(timeout=1.0) is None
        c.close()
        # pickle and garbage on the plaintext pairing port
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(beta.endpoint)
        s.send_multipart([pickle.dumps(object), b"\x00" * 10])
        s.close()
    finally:
        ctx.destroy(linger=0)
    for port in (beta.port, beta.control_port):  # random bytes straight onto TCP
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            raw.sendall(bytes(range(256)) * 8)
    time.sleep(0.5)
    assert beta.proc.poll() is None
    assert not any("running rank" in x for x in beta.lines)
    seen = {}
    with Browser(lambda e: seen.__setitem__(e.peer.name, e.peer), interfaces=["127.0.0.1"]):
        assert _wait(lambda: "beta" in seen)  # still advertised
    after = _files(beta.data_dir)
    assert set(after) == set(before)  # wrote nothing (and nothing outside: no new files)


def _ping(spec, master) -> bool:
    c = ControlClient(spec.endpoint, ops=TO_MASTER,
                      curve=CurveClientConfig(master.identity, spec.public_key))
    try:
        c.send("ping", {"t": 2.0})
        msg = c.recv(timeout=3)
        return msg is not None and msg.op == "pong"
    finally:
        c.close()


@pytest.mark.slow
def test_unpair_on_the_worker_refuses_that_master_from_its_next_connect(workers, tmp_path):
    alpha = workers[0]
    master = make_device(tmp_path, "laptop-2", "worker")
    spec = alpha.pair(master.identity, master.trust)
    assert _ping(spec, master)

    def cli(*extra: str) -> str:
        p = subprocess.run([sys.executable, "-m", "core.cli", "worker", "--data-dir",
                            str(alpha.data_dir), *extra], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout

    assert "laptop-2" in cli("--masters")
    assert "unpaired 'laptop-2'" in cli("--unpair", "laptop-2")
    assert "laptop-2" not in cli("--masters")
    assert not _ping(spec, master)  # the running daemon re-read its trust store
    p = subprocess.run([sys.executable, "-m", "core.cli", "worker", "--data-dir",
                        str(alpha.data_dir), "--unpair", "nobody"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode != 0 and "no paired master is called 'nobody'" in p.stderr + p.stdout
    assert "Traceback" not in p.stderr


def _worker_key(w: WorkerProcess) -> str:
    import json
    return json.loads((w.data_dir / "identity.json").read_text())["public_key"]
