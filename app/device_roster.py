"""The devices the user enrolled: paired workers with the memory budget chosen for each.

Keys live in the master's trust store (`TrustStore.open("worker", data_dir)`, written by
`pair_with`); what only the app knows (memory budget, last address and control port) lives
in the app settings under SETTINGS_KEY, keyed by public key. A device is enrolled when its
key is in the trust store; settings without a trusted key are ignored (unpaired elsewhere,
e.g. with the CLI).

This is the seam to the cluster session: `worker_specs()` gives, per enrolled device, the
fields of `core.cluster.session.WorkerSpec` (name, control endpoint, public key, budget).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal

from core.cluster.identity import fingerprint
from core.cluster.peer_info import PeerInfo
from core.cluster.trust import TrustStore

SETTINGS_KEY = "devices"
GB = 2**30


@dataclass(frozen=True)
class EnrolledDevice:
    """One paired worker as the app remembers it."""

    name: str
    public_key: str
    address: str = ""  # host of its last known address
    port: int = 0  # pairing/info port (plaintext)
    control_port: int = 0  # CURVE control port (0 until the worker reported it)
    memory_budget: int = 0  # bytes the user lets the model use there

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    @property
    def control_endpoint(self) -> str:
        """tcp://host:port of its CURVE control port ("" when unknown)."""
        if not (self.address and self.control_port):
            return ""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"tcp://{host}:{self.control_port}"


class SettingsLike(Protocol):
    """The part of app.store.Store the roster uses (get_setting / set_setting)."""

    def get_setting(self, key: str, default: Any = None) -> Any: ...

    def set_setting(self, key: str, value: Any) -> None: ...


class DeviceRoster(QObject):
    """Enrolled devices (trust store + settings); `changed` fires after every edit.

    Used from the GUI thread only; the trust store itself is also written by the pairing
    job (off the GUI thread) through `pair_with(..., trust=roster.trust)`.
    """

    changed = Signal()

    def __init__(self, settings: SettingsLike, data_dir: Path | str,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.trust = TrustStore.open("worker", self.data_dir)

    def _saved(self) -> dict[str, dict]:
        raw = self.settings.get_setting(SETTINGS_KEY, {}) or {}
        return raw if isinstance(raw, dict) else {}

    def devices(self) -> list[EnrolledDevice]:
        """Every trusted worker, with its saved budget and address (sorted by name)."""
        saved = self._saved()
        out = []
        for peer in self.trust.list():
            d = saved.get(peer.public_key, {})
            try:
                out.append(EnrolledDevice(
                    name=peer.name, public_key=peer.public_key,
                    address=str(d.get("address", "")), port=int(d.get("port", 0)),
                    control_port=int(d.get("control_port", 0)),
                    memory_budget=int(d.get("memory_budget", 0))))
            except (TypeError, ValueError):  # a damaged entry: keep the device, lose extras
                out.append(EnrolledDevice(name=peer.name, public_key=peer.public_key))
        return out

    def get(self, public_key: str) -> EnrolledDevice | None:
        return next((d for d in self.devices() if d.public_key == public_key), None)

    def is_enrolled(self, fp: str) -> bool:
        """True when a device with key fingerprint `fp` is paired with us."""
        return any(d.fingerprint == fp for d in self.devices())

    def enroll(self, public_key: str, peer: PeerInfo, memory_budget: int) -> EnrolledDevice:
        """Remember a freshly paired `peer` (its key is already in the trust store)."""
        dev = EnrolledDevice(name=peer.name, public_key=public_key, address=peer.address,
                             port=peer.port, control_port=peer.control_port,
                             memory_budget=int(memory_budget))
        self._save(dev)
        self.changed.emit()
        return dev

    def set_budget(self, public_key: str, memory_budget: int) -> None:
        dev = self.get(public_key)
        if dev is not None:
            self._save(EnrolledDevice(**{**asdict(dev), "memory_budget": int(memory_budget)}))
            self.changed.emit()

    def update_address(self, peer: PeerInfo) -> None:
        """Discovery saw an enrolled device (maybe at a new address or control port)."""
        dev = next((d for d in self.devices() if d.fingerprint == peer.fingerprint), None)
        if dev is None:
            return
        new = EnrolledDevice(**{**asdict(dev), "address": peer.address, "port": peer.port,
                                "control_port": peer.control_port or dev.control_port})
        if new != dev:
            self._save(new)
            self.changed.emit()

    def remove(self, public_key: str) -> bool:
        """Unpair: drop the key from the trust store and forget its settings."""
        gone = self.trust.remove(public_key)
        saved = self._saved()
        had = saved.pop(public_key, None) is not None
        self.settings.set_setting(SETTINGS_KEY, saved)
        if gone or had:
            self.changed.emit()
        return bool(gone)

    def worker_specs(self) -> list[dict[str, Any]]:
        """Per enrolled device with a known control port: WorkerSpec's fields."""
        return [dict(name=d.name, endpoint=d.control_endpoint, public_key=d.public_key,
                     memory_budget=d.memory_budget)
                for d in self.devices() if d.control_endpoint]

    def _save(self, dev: EnrolledDevice) -> None:
        saved = self._saved()
        d = asdict(dev)
        saved[dev.public_key] = {k: d[k] for k in
                                 ("address", "port", "control_port", "memory_budget")}
        self.settings.set_setting(SETTINGS_KEY, saved)
