"""The table of workers the Add device dialog lists: one row per discovered peer.

Rows are keyed by the mDNS service name ("manual:host:port" for peers found with the
host:port fallback). `apply(PeerEvent)` adds, updates and removes rows; it must run on the
GUI thread (see app/devices/peer_browser.py, which marshals zeroconf's callbacks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

from core.cluster.discovery import PeerEvent
from core.cluster.peer_info import PeerInfo

COLUMNS = ("Name", "Memory free", "Cores", "Platform", "Fingerprint", "Status")
GB = 2**30
_Index = QModelIndex | QPersistentModelIndex


def memory_text(peer: PeerInfo) -> str:
    """"5.0 of 8.0 GB" (free of total)."""
    return f"{peer.mem_free / GB:.1f} of {peer.mem_total / GB:.1f} GB"


class PeerListModel(QAbstractTableModel):
    """Live peers; `is_enrolled(fingerprint)` tells which are paired with this app."""

    KeyRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, is_enrolled: Callable[[str], bool] = lambda _fp: False, parent=None):
        super().__init__(parent)
        self.is_enrolled = is_enrolled
        self._keys: list[str] = []
        self._peers: dict[str, PeerInfo] = {}

    # queries ---------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._keys)

    def peers(self) -> list[PeerInfo]:
        return [self._peers[k] for k in self._keys]

    def peer(self, row: int) -> PeerInfo | None:
        return self._peers[self._keys[row]] if 0 <= row < len(self._keys) else None

    def key(self, row: int) -> str | None:
        return self._keys[row] if 0 <= row < len(self._keys) else None

    def row_of(self, key: str) -> int:
        return self._keys.index(key) if key in self._peers else -1

    def status(self, peer: PeerInfo) -> str:
        if self.is_enrolled(peer.fingerprint):
            return "Paired with this app"
        return "Paired elsewhere" if peer.paired else "Not paired"

    # changes ---------------------------------------------------------------------------
    def apply(self, event: PeerEvent) -> None:
        """Add, update or remove the row of `event.service`."""
        if event.kind == "remove":
            self.remove(event.service)
        else:
            self.upsert(event.service, event.peer)

    def upsert(self, key: str, peer: PeerInfo) -> None:
        row = self.row_of(key)
        if row < 0:
            row = len(self._keys)
            self.beginInsertRows(QModelIndex(), row, row)
            self._keys.append(key)
            self._peers[key] = peer
            self.endInsertRows()
            return
        self._peers[key] = peer
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def remove(self, key: str) -> None:
        row = self.row_of(key)
        if row < 0:
            return
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._keys[row]
        del self._peers[key]
        self.endRemoveRows()

    def refresh_status(self) -> None:
        """The enrolled set changed: repaint the Status column."""
        if self._keys:
            col = len(COLUMNS) - 1
            self.dataChanged.emit(self.index(0, col), self.index(len(self._keys) - 1, col))

    # Qt model API ----------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802, B008 (Qt API)
        return 0 if parent.isValid() else len(self._keys)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        peer = self.peer(index.row()) if index.isValid() else None
        if peer is None:
            return None
        if role == self.KeyRole:
            return self._keys[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (peer.name, memory_text(peer), str(peer.cores), peer.platform,
                    peer.fingerprint, self.status(peer))[col]
        if role == Qt.ItemDataRole.ToolTipRole:
            return (f"{peer.name} at {peer.address}:{peer.port}\n"
                    f"Key fingerprint {peer.fingerprint} (compare with the worker's console)")
        return None
