"""The app on a cluster Session: this computer + a real paired `tpi-chat worker` process on
a device of its own (a network namespace, tests/fixtures/home_lan.py), a tiny random model.
The devices panel shows the worker's memory window and a live, changing RTT; a worker
killed mid-reply ends the reply with a clear message, its card goes offline, and the next
message is answered on the devices left; a device whose rank cannot start is left out with
its reason. Throughout, the GUI thread neither runs torch nor waits on a socket."""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import replace

import pytest
from PySide6.QtCore import Qt

from app.devices.roster import GB, DeviceRoster
from app.engine.worker import default_loader as app_loader
from app.store.db import Store, data_dir
from tests.app.conftest import caught, close_window, open_window, send
from tests.app.thread_guard import GuiThreadGuard
from tests.app.worker_process import enroll_in_app

pytestmark = pytest.mark.slow

LOAD_MS = 120_000


def default_loader(model, opts, progress, devices=None, **kw):
    """The app's loader with every device forced in: these tests are about a device taking
    part, which the planner would rightly skip for a tiny model (test_session_planner.py
    covers that)."""
    forced = [replace(d, forced=True) for d in devices] if devices else devices
    return app_loader(model, opts, progress, devices=forced, **kw)
REPLY_MS = 60_000
GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 8,
          "repetition_penalty": 1.0}
MEMORY_RE = re.compile(r"Memory window (\d+)/(\d+) blocks")
RTT_RE = re.compile(r"Link RTT ([\d.]+) ms")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.fixtures.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama")


def no_modal_warnings(monkeypatch) -> list[str]:
    """A load failure's message box would block the test forever: record it instead."""
    shown: list[str] = []
    monkeypatch.setattr("app.main_window.warn",
                        lambda _parent, _title, text, *a: shown.append(text))
    return shown


def card_numbers(card) -> tuple[int, int, float | None]:
    mem = MEMORY_RE.search(card.memory_label.text())
    rtt = RTT_RE.search(card.rtt_label.text())
    return (int(mem[1]) if mem else 0, int(mem[2]) if mem else 0,
            float(rtt[1]) if rtt else None)


def test_session_devices_panel_and_a_worker_dropping_out(qtbot, themed, tiny_model, tmp_path,
                                                         monkeypatch, remote_workers):
    name = f"app-worker-{uuid.uuid4().hex[:6]}"
    worker = remote_workers.start(name, tmp_path / "worker")
    try:
        assert enroll_in_app(worker, GB) == name
        store = Store()
        (spec,) = DeviceRoster(store, data_dir()).worker_specs()
        store.close()
        assert spec.endpoint == f"tcp://{worker.host}:{worker.control_port}"
        warnings = no_modal_warnings(monkeypatch)
        guard = GuiThreadGuard().arm(monkeypatch)
        w = open_window(qtbot, default_loader, wait_ready=False, model=str(tiny_model),
                        sampling=GREEDY)
        shipped: list[tuple[str, int, int]] = []
        w.engine.worker.device_progress.connect(lambda *a: shipped.append(a))

        # Cancel while shards go to the worker: the load ends, nothing is left half-loaded
        with caught(qtbot, w.engine.worker.load_cancelled, timeout=LOAD_MS):
            qtbot.waitUntil(lambda: bool(shipped) or w.controller.ready or bool(warnings),
                            timeout=LOAD_MS)
            assert shipped, (warnings, w.devices.state_of(name), w.status.cluster.text())
            # `shipped` fills in the engine thread (a lambda runs in the sender's thread);
            # the card updates when the GUI thread gets the queued signal
            card = w.devices.cards[name]
            qtbot.waitUntil(lambda: "loading" in card.role.text(), timeout=5000)
            assert card.memory_label.text().startswith(("Shipping\u00a0", "Shipped\u00a0"))
            w.cancel_load()
        assert not w.controller.ready and w.engine.worker._model is None and not warnings

        shipped.clear()
        w.load_model(str(tiny_model))
        qtbot.waitUntil(lambda: w.controller.ready, timeout=LOAD_MS)
        assert w.status.cluster.text() == "2 ranks"
        assert shipped and shipped[-1][0] == name and shipped[-1][1] == shipped[-1][2] > 0

        send(qtbot, w, "What is the capital of France?", timeout=REPLY_MS)
        assert not w.controller.last_error
        assert w.chat_view.messages[-1].role == "assistant"
        card = w.devices.cards[name]
        assert "worker" in card.role.text() and card.share.text()

        # the worker's memory window, and an RTT that moves (status pushed each second)
        qtbot.waitUntil(lambda: card_numbers(card)[0] > 0
                        and card_numbers(card)[2] is not None,
                        timeout=10_000)
        resident, budget, _ = card_numbers(card)
        assert 0 < resident <= budget and card.memory.fraction > 0
        rtts: set[float] = set()
        qtbot.waitUntil(lambda: rtts.add(card_numbers(card)[2]) or len(rtts - {None}) >= 2,
                        timeout=20_000)
        assert len(card.spark.samples) >= 2
        assert w.devices.this_computer.role.text().startswith("master")

        # the worker dies mid-reply: a clear message, its card offline, the app up
        w.settings.set_params({**GREEDY, "max_new_tokens": 400})
        armed = [True]
        w.engine.worker.token.connect(lambda _p: armed[0] and worker.kill())
        send(qtbot, w, "Tell me a long story.", timeout=REPLY_MS)
        assert f"'{name}' stopped answering" in w.controller.last_error
        shown = w.chat_view.messages[-1]
        assert "stopped answering" in shown.error_label.text()
        qtbot.waitUntil(lambda: "offline" in card.role.text(), timeout=10_000)
        assert "Offline" in card.rtt_label.text()

        # the next message is answered on the devices left (this computer alone)
        armed[0] = False
        w.controller.last_error = ""
        w.settings.set_params(GREEDY)
        send(qtbot, w, "Are you still there?", timeout=LOAD_MS)
        assert not w.controller.last_error
        assert w.chat_view.messages[-1].text()
        qtbot.waitUntil(lambda: w.status.cluster.text() == "1 rank", timeout=5000)

        # torch ran, sockets waited, but never on the GUI thread
        engine_threads = w.engine.worker.torch_thread_ids
        assert engine_threads and threading.get_ident() not in engine_threads
        assert guard.calls_seen > 0
        assert guard.violations == [], "\n".join(guard.violations[:3])
        close_window(w)
    finally:
        worker.stop()


def test_an_enrolled_device_that_is_off_is_left_out_until_it_is_back(
        qtbot, themed, tiny_model, tmp_path, monkeypatch, remote_workers):
    warnings = no_modal_warnings(monkeypatch)
    name = f"off-worker-{uuid.uuid4().hex[:6]}"
    worker = remote_workers.start(name, tmp_path / "worker")
    try:
        enroll_in_app(worker, GB)
    finally:
        worker.stop()
    w = open_window(qtbot, default_loader, wait_ready=False, model=str(tiny_model),
                    sampling=GREEDY)
    w.discovery_interfaces = [remote_workers.host_ip]  # before the device watch starts
    qtbot.waitUntil(lambda: w.controller.ready or bool(warnings), timeout=LOAD_MS)
    assert not warnings and w.status.cluster.text() == "1 rank"
    qtbot.waitUntil(lambda: w.devices.state_of(name) == "offline", timeout=10_000)
    assert "next load" in w.devices.cards[name].share.text()
    send(qtbot, w, "Hello?", timeout=REPLY_MS)
    assert not w.controller.last_error and w.chat_view.messages[-1].text()

    # the worker starts again: mDNS finds it, the model re-plans with it
    worker = remote_workers.start(name, tmp_path / "worker")
    try:
        qtbot.waitUntil(lambda: w.status.cluster.text() == "2 ranks" and w.controller.ready,
                        timeout=LOAD_MS)
        qtbot.waitUntil(lambda: w.devices.state_of(name) == "ready", timeout=10_000)
        send(qtbot, w, "And now?", timeout=REPLY_MS)
        assert not w.controller.last_error and not warnings
        close_window(w)
    finally:
        worker.stop()


def test_a_device_whose_rank_cannot_start_never_takes_the_model_away(
        qtbot, themed, tiny_model, tmp_path, monkeypatch, remote_workers):
    """The device answers, takes its shards, but cannot reach this computer (a strict
    firewall): it is left out, its card says why in its own words with a Retry button,
    and the app answers on this computer alone."""
    warnings = no_modal_warnings(monkeypatch)
    name = f"walled-{uuid.uuid4().hex[:6]}"
    worker = remote_workers.start(name, tmp_path / "worker")
    try:
        enroll_in_app(worker, GB)
        device = remote_workers.by_name[name]
        device.firewall(remote_workers.host_ip, [worker.control_port, worker.port])
        w = open_window(qtbot, default_loader, wait_ready=False, model=str(tiny_model),
                        sampling=GREEDY)
        qtbot.waitUntil(lambda: w.controller.ready or bool(warnings), timeout=LOAD_MS)
        assert not warnings and w.status.cluster.text() == "1 rank"
        qtbot.waitUntil(lambda: w.devices.state_of(name) == "failed", timeout=10_000)
        card = w.devices.cards[name]
        assert "cannot reach the master" in card.share.text()
        assert card.share.textFormat() == Qt.TextFormat.PlainText
        assert not card.retry_button.isHidden() and "Left out" in card.rtt_label.text()
        send(qtbot, w, "Hello?", timeout=REPLY_MS)
        assert not w.controller.last_error and w.chat_view.messages[-1].text()

        # Retry: the model reloads with it, and it is left out again for the same reason
        with caught(qtbot, w.engine.worker.ready, timeout=LOAD_MS):
            qtbot.mouseClick(card.retry_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: w.devices.state_of(name) == "failed", timeout=10_000)
        assert not warnings
        close_window(w)
    finally:
        worker.stop()
