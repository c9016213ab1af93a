"""The devices this computer enrolled: paired workers and the memory budget given each.

Shared by the app and the command line (`tpi-chat pair`, `devices`, `--devices`), through
the same data folder. Keys live in the master's trust store (`TrustStore.open("worker",
data_dir)`, written by `pair_with`); what only the master knows (last address, ports,
memory budget) lives in DATA_DIR/devices.json, keyed by public key. A device is enrolled
while its key is trusted: entries without a trusted key are ignored (unpaired elsewhere).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from core.cluster.identity import fingerprint
from core.cluster.peer_info import PeerInfo
from core.cluster.trust import TrustStore
from core.cluster.worker_spec import WorkerSpec
from core.comm.endpoint import tcp_endpoint
from core.errors import TpiError

FILE_NAME = "devices.json"
MAX_FILE_BYTES = 1 << 20  # a roster of a home's devices is a few KB
DEFAULT_BUDGET = 2**30  # bytes a device lends when the user never chose


@dataclass(frozen=True)
class EnrolledDevice:
    """One paired worker as this computer remembers it."""

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
        return tcp_endpoint(self.address, self.control_port)

    def spec(self) -> WorkerSpec:
        """What a Session takes."""
        return WorkerSpec(self.name, self.control_endpoint, self.public_key,
                          self.memory_budget or DEFAULT_BUDGET)


_EXTRAS = ("address", "port", "control_port", "memory_budget")


class Roster:
    """Enrolled devices (trust store + devices.json). Writes are atomic (temp + rename)."""

    def __init__(self, data_dir: Path | str):
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / FILE_NAME
        self.trust = TrustStore.open("worker", self.data_dir)

    def _saved(self) -> dict[str, dict]:
        try:
            if self.path.stat().st_size > MAX_FILE_BYTES:
                return {}
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # missing or damaged: the keys in the trust store still count
        return {k: v for k, v in raw.items() if isinstance(v, dict)} \
            if isinstance(raw, dict) else {}

    def _write(self, saved: dict[str, dict]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=".devices-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(saved, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def has_file(self) -> bool:
        return self.path.exists()

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

    def save(self, dev: EnrolledDevice) -> None:
        saved = self._saved()
        d = asdict(dev)
        saved[dev.public_key] = {k: d[k] for k in _EXTRAS}
        self._write(saved)

    def enroll(self, public_key: str, peer: PeerInfo, memory_budget: int) -> EnrolledDevice:
        """Remember a freshly paired `peer` (its key is already in the trust store)."""
        dev = EnrolledDevice(name=peer.name, public_key=public_key, address=peer.address,
                             port=peer.port, control_port=peer.control_port,
                             memory_budget=int(memory_budget))
        self.save(dev)
        return dev

    def announced_move(self, peer: PeerInfo) -> EnrolledDevice | None:
        """What an announcement (mDNS, unauthenticated: anyone can send one with any
        fingerprint) says an enrolled device's address now is, when that differs from
        what we saved; None otherwise. Not saved: see update_address."""
        dev = next((d for d in self.devices() if d.fingerprint == peer.fingerprint), None)
        if dev is None:
            return None
        new = replace(dev, address=peer.address, port=peer.port,
                      control_port=peer.control_port or dev.control_port)
        return None if new == dev else new

    def update_address(self, peer: PeerInfo,
                       proves_key: Callable[[EnrolledDevice], bool]) -> bool:
        """Save an announced new address of an enrolled device, only if the device there
        proves it holds the enrolled key (`proves_key`: a CURVE ping to the new control
        endpoint, see address_proof.py); True when saved. A forged announcement thus
        cannot send the master's next connection elsewhere."""
        new = self.announced_move(peer)
        if new is None or not proves_key(new):
            return False
        if self.get(new.public_key) is None:  # unpaired while we asked
            return False
        self.save(new)
        return True

    def remove(self, public_key: str) -> bool:
        """Unpair: drop the key from the trust store and forget its extras."""
        gone = self.trust.remove(public_key)
        saved = self._saved()
        had = saved.pop(public_key, None) is not None
        if had:
            self._write(saved)
        return bool(gone) or had

    def import_extras(self, saved: dict[str, Any]) -> None:
        """Take extras saved elsewhere (the app kept them in its settings before)."""
        mine = self._saved()
        for key, d in saved.items():
            if isinstance(d, dict) and key not in mine:
                mine[key] = {k: d[k] for k in _EXTRAS if k in d}
        self._write(mine)

    def worker_specs(self, wanted: str = "all") -> list[WorkerSpec]:
        """Specs of the devices `wanted` names: "all", "none", or NAME[,NAME...].
        A name that is not enrolled, or one whose control port is unknown, is an error."""
        devices = self.devices()
        if wanted.strip().lower() in ("", "none"):
            return []
        if wanted.strip().lower() == "all":
            return [d.spec() for d in devices if d.control_endpoint]
        out = []
        for name in (n.strip() for n in wanted.split(",") if n.strip()):
            dev = next((d for d in devices if name in (d.name, d.fingerprint)), None)
            if dev is None:
                known = ", ".join(f"'{d.name}'" for d in devices) or "none yet"
                raise TpiError(f"no paired device is called '{name}' (paired: {known}); "
                               "`tpi-chat pair HOST:PORT --code NNN-NNN` pairs one")
            if not dev.control_endpoint:
                raise TpiError(f"'{dev.name}' never told this computer its control port; "
                               "pair it again")
            out.append(dev.spec())
        return out
