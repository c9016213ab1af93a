"""Trusted peer keys: who this device has paired with.

One JSON file per role of the peers it holds: a worker keeps the masters it trusts
(`trusted-masters.json`), a master keeps its paired workers (`trusted-workers.json`) with
name, last known address and fingerprint. The ZAP handler asks `contains` on every new
connection, so unpairing (`remove`, on either side) takes effect on the peer's next
connect, even when another process (the CLI) edits the file: lookups reload the file
when it changed on disk.

Writes are atomic (temp file + fsync + rename): a crash leaves the old or the new store,
never a half-written one. Read-modify-write cycles hold an advisory file lock where the
OS has one (POSIX), so two processes pairing at once do not lose each other's entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.cluster.identity import default_data_dir, fingerprint, is_public_key
from core.errors import TpiError

try:
    import fcntl
except ImportError:  # Windows: in-process lock only
    fcntl = None  # type: ignore[assignment]

ROLES = ("master", "worker")
_FORMAT_VERSION = 1


class TrustError(TpiError):
    """The trust store is unreadable or damaged."""


@dataclass(frozen=True)
class TrustedPeer:
    """One paired device."""

    public_key: str  # z85, 40 chars
    name: str
    role: str  # "master" or "worker": what the peer is to us
    address: str = ""  # last known endpoint (workers, for the master's device list)
    paired_at: float = field(default_factory=time.time)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


class TrustStore:
    """The set of trusted peer keys of one role, persisted in one JSON file."""

    def __init__(self, path: Path | str, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        self.path = Path(path)
        self.role = role
        self._lock = threading.RLock()
        self._peers: dict[str, TrustedPeer] = {}
        self._stamp: tuple[int, int, int] | None = None  # (mtime_ns, size, inode) loaded

    @classmethod
    def open(cls, role: str, data_dir: Path | str | None = None) -> TrustStore:
        """The store of peers of `role` in the data dir (default: the user data dir)."""
        directory = Path(data_dir) if data_dir is not None else default_data_dir()
        return cls(directory / f"trusted-{role}s.json", role)

    # -- queries (reload when the file changed, so edits by other processes count) --

    def contains(self, public_key: str) -> bool:
        with self._lock:
            self._refresh()
            return public_key in self._peers

    def get(self, public_key: str) -> TrustedPeer | None:
        with self._lock:
            self._refresh()
            return self._peers.get(public_key)

    def list(self) -> list[TrustedPeer]:
        with self._lock:
            self._refresh()
            return sorted(self._peers.values(), key=lambda p: (p.name, p.public_key))

    # -- changes --

    def add(self, peer: TrustedPeer) -> None:
        """Trust `peer` (replaces an entry with the same key: re-pairing updates it)."""
        if peer.role != self.role:
            raise ValueError(f"a {peer.role} cannot go into the {self.role} store")
        if not is_public_key(peer.public_key):
            raise ValueError("not a z85 CURVE public key")
        with self._locked_update() as peers:
            peers[peer.public_key] = peer

    def remove(self, key_or_name: str) -> list[TrustedPeer]:
        """Unpair: drop the peer with this public key, or every peer of this name."""
        with self._locked_update() as peers:
            gone = [p for k, p in peers.items() if key_or_name in (k, p.name)]
            for p in gone:
                del peers[p.public_key]
        return gone

    # -- file handling --

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._peers = self._read() if stamp is not None else {}
        self._stamp = stamp

    def _read(self) -> dict[str, TrustedPeer]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            peers = {}
            for d in data["peers"]:
                p = TrustedPeer(**{k: d[k] for k in
                                   ("public_key", "name", "role", "address", "paired_at")})
                if (not is_public_key(p.public_key) or p.role != self.role
                        or not isinstance(p.name, str) or not isinstance(p.address, str)
                        or not isinstance(p.paired_at, int | float)):
                    raise ValueError("bad entry")
                peers[p.public_key] = p
            return peers
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TrustError(
                f"The list of paired devices {self.path} is damaged ({type(e).__name__}); "
                "delete it and pair your devices again.") from e

    @contextlib.contextmanager
    def _locked_update(self) -> Iterator[dict[str, TrustedPeer]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock, self._file_lock():
            self._stamp = None
            peers = self._read()  # fresh from disk under the lock: no lost updates
            yield peers
            self._write(peers)
            self._peers = peers
            self._stamp = self._file_stamp()

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        if fcntl is None:
            yield
            return
        fd = os.open(self.path.with_name(self.path.name + ".lock"),
                     os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, peers: dict[str, TrustedPeer]) -> None:
        data = {"version": _FORMAT_VERSION,
                "peers": [asdict(p) for p in sorted(peers.values(), key=lambda p: p.public_key)]}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}-", suffix=".tmp",
                                   dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
