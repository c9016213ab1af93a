"""The enrolled devices for the GUI: core.cluster.roster.Roster plus a `changed` signal.

The roster itself (trust store + DATA_DIR/devices.json) is shared with the command line
(`tpi-chat pair`, `tpi-chat devices`, `--devices`). Budgets and addresses the app kept in
its settings before (SETTINGS_KEY) are moved into devices.json the first time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal

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
    job (off the GUI thread) through `pair_with(..., trust=roster.trust)`.
    """

    changed = Signal()

    def __init__(self, settings: SettingsLike, data_dir: Path | str,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.core = Roster(data_dir)
        self.data_dir = self.core.data_dir
        self.trust = self.core.trust
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

    def update_address(self, peer: PeerInfo) -> None:
        if self.core.update_address(peer):
            self.changed.emit()

    def remove(self, public_key: str) -> bool:
        gone = self.core.remove(public_key)
        self.changed.emit()
        return gone

    def worker_specs(self) -> list[WorkerSpec]:
        """Per enrolled device with a known control port: what a Session takes."""
        return self.core.worker_specs("all")
