"""Add device: a real worker process on loopback is listed live, says it is not accepting
pairing until its user presses P, refuses a wrong code with the tries-left message, pairs
with the code it printed, becomes an enrolled device in the Devices panel (trust store +
settings), and its row vanishes when the process stops. The dialog says what to do on
the device, and shows what came from the network as plain text."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from PySide6.QtCore import Qt

from app.devices.add_dialog import AddDeviceDialog, default_budget_gb, pair_hint
from app.devices.roster import GB
from core.cluster.trust import TrustStore
from tests.app.conftest import close_window, open_window
from tests.app.fake_engine import FakeLoader
from tests.app.worker_process import WorkerProcess

WAIT_MS = 15000


def _rows_named(dlg, name: str, manual: bool = False) -> list[int]:
    m = dlg.model
    return [r for r in range(m.rowCount()) if m.peer(r).name == name
            and m.key(r).startswith("manual:") == manual]


def _cell(dlg, row: int, col: int) -> str:
    return dlg.model.index(row, col).data()


def _wrong(code: str) -> str:
    return str((int(code[0]) + 1) % 10) + code[1:]


@pytest.mark.slow
def test_add_device_lists_pairs_and_loses_a_real_worker(qtbot, themed, tmp_path):
    name = f"test-worker-{uuid.uuid4().hex[:6]}"  # other runs may advertise on lo too
    worker = WorkerProcess(name, tmp_path / "worker", pair=False)  # as it runs day to day
    try:
        loader = FakeLoader()
        w = open_window(qtbot, loader)
        w.discovery_interfaces = ["127.0.0.1"]
        w.confirm_delete = False
        qtbot.mouseClick(w.devices.add_button, Qt.MouseButton.LeftButton)
        dlg = w.add_device_dialog
        assert dlg is not None and dlg.isVisible()

        # listed live over mDNS, with what its TXT record says
        qtbot.waitUntil(lambda: bool(_rows_named(dlg, name)), timeout=WAIT_MS)
        row = _rows_named(dlg, name)[0]
        assert _cell(dlg, row, 4) == worker.fingerprint
        assert re.fullmatch(r"\d+\.\d of \d+\.\d GB", _cell(dlg, row, 1))
        assert int(_cell(dlg, row, 2)) >= 1 and _cell(dlg, row, 3)
        assert _cell(dlg, row, 5) == "Not paired"
        header = dlg.table.horizontalHeader()  # rows came in live: no column is cut short
        assert all(header.sectionSize(c) >= dlg.table.sizeHintForColumn(c) for c in range(1, 6))
        assert dlg.select_peer(name)
        peer = dlg.current_peer()
        assert dlg.budget.value() == default_budget_gb(peer)
        assert worker.fingerprint in dlg.selected.text()
        assert dlg.hint.isVisible() and dlg.hint.text() == (
            f"On \u201c{name}\u201d, run `tpi-chat worker --pair` (or press P in its console) "
            "to open pairing for 5 minutes, then type the code it shows.")

        # the manual host:port fallback finds the same device
        dlg.manual.setText(f"{worker.host}:{worker.port}")
        qtbot.mouseClick(dlg.probe_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: bool(_rows_named(dlg, name, manual=True)), timeout=WAIT_MS)
        assert dlg.current_peer().fingerprint == worker.fingerprint
        assert dlg.select_peer(name)

        # pairing is closed on the device: the dialog says what to do there
        dlg.code.setText("123-456")
        qtbot.mouseClick(dlg.pair_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "not accepting" in dlg.status.text(), timeout=WAIT_MS)
        assert dlg.status.text() == (
            f"'{name}' is not accepting pairing right now: open pairing on the device (run "
            "`tpi-chat worker --pair` there, or press P in its console), then type the code "
            "it shows.")

        # the user presses P on the device; a wrong code is refused with the tries left
        code = worker.open_pairing()
        dlg.code.setText(_wrong(code))
        qtbot.mouseClick(dlg.pair_button, Qt.MouseButton.LeftButton)
        assert dlg.progress.isVisible() and not dlg.pair_button.isEnabled()
        qtbot.waitUntil(lambda: "tries left" in dlg.status.text(), timeout=WAIT_MS)
        assert dlg.status.text() == f"'{name}' refused the code (2 tries left)."
        assert not dlg.progress.isVisible()
        assert w.roster.devices() == [] and name not in w.devices.cards

        # the printed code pairs it; it is enrolled with the chosen budget
        dlg.budget.setValue(1.5)
        dlg.code.setText(code)
        qtbot.keyClick(dlg.code, Qt.Key.Key_Return)
        # (the trust store has the key a moment before the app saved budget and address)
        qtbot.waitUntil(lambda: "Paired with" in dlg.status.text(), timeout=WAIT_MS)
        worker.expect(re.compile(r"paired with '"))
        (dev,) = w.roster.devices()
        assert dev.name == name and dev.fingerprint == worker.fingerprint
        assert dev.memory_budget == int(1.5 * GB) and dev.port == worker.port
        assert "Paired with" in dlg.status.text()
        assert _cell(dlg, _rows_named(dlg, name)[0], 5) == "Paired with this app"
        stored = TrustStore.open("worker", w.roster.data_dir).list()
        assert [p.name for p in stored] == [name]
        # budget and address are where the command line finds them too
        assert dev.public_key in json.loads(w.roster.core.path.read_text())
        card = w.devices.cards[name]
        assert "paired" in card.role.text() and "pending" in card.share.text().lower()
        assert "1.5 GB" in card.memory_label.text().replace("\xa0", " ")
        assert not card.remove_button.isHidden()
        # pairing reloads the model with the new device in the plan
        qtbot.waitUntil(lambda: loader.device_names[-1] == [name] and w.controller.ready,
                        timeout=WAIT_MS)
        assert loader.device_names[0] == []

        # the row vanishes when the worker stops (zeroconf goodbye)
        worker.stop()
        assert dlg.isVisible()  # Return in the code field paired, it did not close the dialog
        qtbot.waitUntil(lambda: not _rows_named(dlg, name), timeout=WAIT_MS)

        # Remove device on its card unpairs it
        qtbot.mouseClick(card.remove_button, Qt.MouseButton.LeftButton)
        assert w.roster.devices() == [] and name not in w.devices.cards
        assert TrustStore.open("worker", w.roster.data_dir).list() == []
        dlg.close()
        close_window(w)
    finally:
        worker.stop()


def test_local_workers_spin_box_reloads_with_more_ranks(qtbot, themed):
    seen = []

    class Recording(FakeLoader):
        def __call__(self, model, opts, progress):
            seen.append(opts.ranks)
            return super().__call__(model, opts, progress)

    w = open_window(qtbot, Recording())
    assert seen == [1] and w.devices.local_workers.value() == 0
    w.devices.local_workers.setValue(2)
    qtbot.waitUntil(lambda: seen == [1, 3] and w.controller.ready, timeout=WAIT_MS)
    assert w.store.get_setting("ranks") == 3 and w.rank_actions[3].isChecked()
    w.rank_actions[2].trigger()  # the Model menu and the card stay in step
    assert w.devices.local_workers.value() == 1
    close_window(w)



def test_refusals_and_names_from_the_network_are_plain_text(qtbot, themed, tmp_path):
    from app.devices.roster import DeviceRoster
    from app.store.db import Store
    from core.cluster.peer_info import PeerInfo

    store = Store(tmp_path / "chats.sqlite3")
    try:
        dlg = AddDeviceDialog(DeviceRoster(store, tmp_path), discover=False)
        qtbot.addWidget(dlg)
        evil = "<a href='https://x.example'>mini-pc</a>"
        dlg.model.upsert("k", PeerInfo(evil, "192.168.1.20", 47000, 1, 16 * GB, 8 * GB, 8,
                                       "Linux-x86_64", "3f9a-12c4-88be-07d1", False, 47001))
        assert dlg.hint.isHidden()
        assert dlg.select_peer(evil)
        assert not dlg.hint.isHidden()
        assert dlg.hint.text() == pair_hint(evil) and evil in dlg.hint.text()
        locked = (f"'{evil}' refused the code and is now locked: open pairing again on the "
                  "device (it shows a new code).")
        dlg._pair_failed(None, locked)  # as a PairJob reports it
        assert dlg.status.text() == locked
        for label in (dlg.status, dlg.hint, dlg.selected):
            assert label.textFormat() == Qt.TextFormat.PlainText
        dlg.close()
    finally:
        store.close()
