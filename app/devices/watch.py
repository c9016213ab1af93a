"""Keeps enrolled devices reachable: mDNS tells where each paired worker listens now.

A worker picks new ports when it restarts, so the endpoint the roster saved can go stale;
`DeviceWatch` browses mDNS for the whole life of the main window (zeroconf's thread, events
queued to the GUI thread), hands every enrolled device's announced address to the roster
(which saves it once the device proved its key there: announcements are unauthenticated),
and emits `reappeared(name)` when an enrolled device shows up (again) or its move was
proven, so the window can re-plan with it if the running model left it out.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QObject, Signal

from app.devices.peer_browser import PeerBrowser, connect_queued
from app.devices.roster import DeviceRoster
from core.cluster.discovery import PeerEvent


class DeviceWatch(QObject):
    """mDNS watch over the enrolled devices of `roster` (GUI thread)."""

    reappeared = Signal(str)  # device name

    def __init__(self, roster: DeviceRoster, interfaces: Sequence[str] | None = None,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.roster = roster
        self.browser = PeerBrowser(interfaces, self)
        connect_queued(self.browser, self.on_peer_event)
        roster.moved.connect(self.reappeared)
        self.browser.start()

    def on_peer_event(self, event: PeerEvent) -> None:
        if event.kind == "remove":
            return
        dev = next((d for d in self.roster.devices()
                    if d.fingerprint == event.peer.fingerprint), None)
        if dev is None:
            return
        checking = self.roster.update_address(event.peer)
        if event.kind == "add" and not checking:  # a move says so once it is proven
            self.reappeared.emit(dev.name)

    def close(self) -> None:
        self.browser.close()
