"""The enrolled devices for the GUI: core.cluster.roster.Roster plus a `changed` signal.

The roster itself (trust store + DATA_DIR/devices.json) is shared with the command line
(`tpi-chat pair`, `tpi-chat devices`, `--devices`). Budgets and addresses the app kept in
its settings before (SETTINGS_KEY) are moved into devices.json the first time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import QObject, Qt, Signal

from core.cluster.address_proof import proves_key
from core.cluster.identity import load_or_create
from core.cluster.peer_info import PeerInfo
from core.cluster.roster import EnrolledDevice, Roster
from core.cluster.worker_spec import WorkerSpec

__all__ = ["GB", "DeviceRoster", "EnrolledDevice"]

SETTINGS_KEY = "devices"  # where app versions before devices.json kept the extras
GB = 2**30


class SettingsLike(Protocol):
    """The part of app.store.db.Store the roster uses (get_setting / set_setting)."""

    def get_setting(self, key: str, default: Any = None) -> Any: ...

    def set_setting(self, key: str, value: Any) -> None: ...


class DeviceRoster(QObject):
    """Enrolled devices; `changed` fires after every edit made through it.

    Used from the GUI thread only; the trust store itself is also written by the pairing
    job (off the GUI thread) through `pair_with(..., trust=roster.trust)`. An address
    from discovery is saved only after the device proved its key there (a CURVE ping,
    in a thread of its own; `moved` fires then).
    """

    changed = Signal()
    moved = Signal(str)  # an enrolled device's new address was proven and saved (its name)
    checked = Signal(str, bool)  # (name, proven) after each check of an announced address
    _proof = Signal(object, bool)  # (PeerInfo, proven): from the proof thread

    def __init__(self, settings: SettingsLike, data_dir: Path | str,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.core = Roster(data_dir)
        self.data_dir = self.core.data_dir
        self.trust = self.core.trust
        self._proving: set[str] = set()  # keys with a proof under way (one at a time)
        self._proof.connect(self._proof_done, Qt.ConnectionType.QueuedConnection)
        old = settings.get_setting(SETTINGS_KEY, None)
        if isinstance(old, dict) and old and not self.core.has_file():
            self.core.import_extras(old)
            settings.set_setting(SETTINGS_KEY, None)

    def devices(self) -> list[EnrolledDevice]:
        """Every trusted worker, with its saved budget and address (sorted by name)."""
        return self.core.devices()

    def get(self, public_key: str) -> EnrolledDevice | None:
        return self.core.get(public_key)

    def is_enrolled(self, fp: str) -> bool:
        return self.core.is_enrolled(fp)

    def enroll(self, public_key: str, peer: PeerInfo, memory_budget: int) -> EnrolledDevice:
        dev = self.core.enroll(public_key, peer, memory_budget)
        self.changed.emit()
        return dev

    def update_address(self, peer: PeerInfo) -> bool:
        """An announcement gave an enrolled device a new address: check that the device
        there holds its key (off the GUI thread), then save it. True when a check began."""
        new = self.core.announced_move(peer)
        if new is None or new.public_key in self._proving:
            return False
        self._proving.add(new.public_key)
        threading.Thread(target=self._prove, args=(peer, new), name="address-proof",
                         daemon=True).start()
        return True

    def _prove(self, peer: PeerInfo, new: EnrolledDevice) -> None:
        try:
            ok = proves_key(new, load_or_create(self.data_dir))
        except Exception:  # no identity yet, a socket error: not proven
            ok = False
        try:
            self._proof.emit(peer, ok)
        except RuntimeError:  # the roster is gone (window closed)
            pass

    def _proof_done(self, peer: PeerInfo, ok: bool) -> None:
        dev = self.core.announced_move(peer)
        if dev is not None:
            self._proving.discard(dev.public_key)
        if self.core.update_address(peer, lambda _dev: ok):
            self.changed.emit()
            self.moved.emit(dev.name)
        if dev is not None:
            self.checked.emit(dev.name, ok)

    def remove(self, public_key: str) -> bool:
        gone = self.core.remove(public_key)
        self.changed.emit()
        return gone

    def worker_specs(self) -> list[WorkerSpec]:
        """Per enrolled device with a known control port: what a Session takes."""
        return self.core.worker_specs("all")
