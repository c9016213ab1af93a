"""What a paired master can make a worker do with `measure` and `echo`: bounded.

In-process: the measurer's cache and its once-a-minute limit, the echo budget. Against a
real `tpi-chat worker` as its paired (possibly hostile) master: a measurement arrives in
the background while heartbeats are answered, asking again at once starts no second
measurement process, an echo comes back byte for byte, one too big or past the budget is
refused and the worker keeps serving."""

from __future__ import annotations

import threading
import time

import psutil
import pytest
import torch

from core.cluster import worker_measure
from core.cluster.measures import DeviceSpeed
from core.cluster.worker_measure import MAX_ECHO_BYTES, DeviceMeasurer, EchoBudget
from core.comm.codec import encode
from core.errors import ProtocolError
from tests.fixtures.paired_worker import PairedWorker

SPEED = DeviceSpeed({"q4_1": 2.0}, 0.1, 50.0, 1.0, 2**30, 1, measured_at=time.time())


def _measurer(tmp_path, calls: list, gate: threading.Event | None = None) -> DeviceMeasurer:
    def fake(folder, formats):
        calls.append(formats)
        if gate is not None:
            gate.wait(5)
        return SPEED

    return DeviceMeasurer(tmp_path, tmp_path / "shards", measure_fn=fake)


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pred()


def test_the_first_ask_measures_in_the_background_and_the_answer_is_cached(tmp_path):
    calls: list = []
    gate = threading.Event()
    m = _measurer(tmp_path, calls, gate)
    first = m.answer()
    assert first["device"] is None and first["pending"] is True
    assert m.answer()["pending"] is True and len(calls) == 1  # never two at once
    gate.set()
    _wait(lambda: not m.answer()["pending"])
    assert m.answer()["device"]["read_gbps"] == {"q4_1": 2.0}
    again = _measurer(tmp_path, [])  # a restarted worker reads its cache
    assert again.answer()["device"] is not None


def test_fresh_asks_start_at_most_one_measurement_a_minute(tmp_path, monkeypatch):
    calls: list = []
    m = _measurer(tmp_path, calls)
    m.answer()
    _wait(lambda: not m.answer()["pending"])
    for _ in range(50):
        m.answer(fresh=True)
        m.answer(formats=["q8_0", "no-such-format"])  # a format it lacks: also due
    assert len(calls) == 1
    monkeypatch.setattr(worker_measure, "MIN_GAP_S", 0.0)
    m.answer(formats=["q8_0", "no-such-format"])
    _wait(lambda: len(calls) == 2)
    assert calls[1] == ("q8_0",)


def test_echo_budget_refuses_big_or_too_many_and_recovers():
    b = EchoBudget(budget=4 * MAX_ECHO_BYTES, window_s=0.2)
    with pytest.raises(ProtocolError, match="at most"):
        b.take(MAX_ECHO_BYTES + 1)
    for _ in range(4):
        b.take(MAX_ECHO_BYTES)
    with pytest.raises(ProtocolError, match="too many"):
        b.take(10)
    time.sleep(0.25)
    b.take(MAX_ECHO_BYTES)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = PairedWorker(tmp_path_factory.mktemp("measure") / "w")
    yield w
    w.stop()


def _ask(worker, sock, op, meta, tensors=()):
    return worker.request(sock, encode(op, meta, list(tensors)))


def test_echo_comes_back_and_oversized_or_flooding_echoes_are_refused(worker):
    s = worker.connect()
    try:
        payload = torch.arange(4096, dtype=torch.int32).to(torch.uint8)
        got = _ask(worker, s, "echo", {"t": 1.5}, [payload])
        assert got.op == "echo" and got.meta["t"] == 1.5
        assert torch.equal(got.tensors[0], payload)
        big = torch.zeros(MAX_ECHO_BYTES + 1, dtype=torch.uint8)
        assert _ask(worker, s, "echo", {"t": 2}, [big]).op == "refused"
        assert _ask(worker, s, "echo", {"t": 3}).op == "refused"  # no tensor
        one = torch.zeros(MAX_ECHO_BYTES, dtype=torch.uint8)
        ops = [_ask(worker, s, "echo", {"t": i}, [one]).op for i in range(40)]
        assert "refused" in ops and ops.index("refused") <= 33  # 32 MiB per 10 s
        assert worker.ping() and worker.alive()
    finally:
        s.close()


@pytest.mark.slow
def test_measure_runs_once_in_the_background_whatever_a_master_asks(worker):
    s = worker.connect()
    proc = psutil.Process(worker.proc.proc.pid)
    try:
        first = _ask(worker, s, "measure", {"fresh": True, "formats": ["q8_0"]})
        assert first.op == "measured" and first.meta["pending"] is True
        assert worker.ping(timeout=2.0)  # heartbeats answered while it measures
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = _ask(worker, s, "measure", {"fresh": True})
            if not got.meta["pending"]:
                break
            time.sleep(0.2)
        speed = DeviceSpeed.from_dict(got.meta["device"])
        assert speed.read_gbps["q8_0"] > 0.01 and speed.cores >= 1
        assert speed.msg_ms > 0 and speed.frame_ms > 0  # its messaging (measure_messaging)
        for _ in range(20):  # a hostile master asking again and again: nothing new runs
            again = _ask(worker, s, "measure", {"fresh": True, "formats": ["q4_0"]})
            assert again.meta["pending"] is False
        assert proc.children(recursive=True) == []
        junk = _ask(worker, s, "measure", {"fresh": "yes", "formats": "all" * 1000})
        assert junk.op == "measured" and junk.meta["pending"] is False
    finally:
        s.close()


def test_no_measurement_while_ranks_run_or_when_the_master_says_not_to(tmp_path):
    calls: list = []
    busy = [True]

    def fake(folder, formats):
        calls.append(formats)
        return SPEED

    m = DeviceMeasurer(tmp_path, tmp_path / "shards", measure_fn=fake, busy=lambda: busy[0])
    assert m.answer(fresh=True) == {"device": None, "pending": False, "error": None}
    busy[0] = False
    assert m.answer(start=False)["pending"] is False and calls == []
    m.answer()
    _wait(lambda: len(calls) == 1)
