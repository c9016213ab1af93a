"""Qt glue for mDNS discovery: zeroconf's callbacks become queued signals on the GUI thread.

`core.cluster.discovery.Browser` calls back from zeroconf's own thread; emitting a Qt
signal from there to a receiver living in the GUI thread is a queued connection, so the
slot (the peer list model) only ever runs on the GUI thread. Starting and closing the
Browser happen in a helper thread: neither ever makes the GUI wait on the network.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from PySide6.QtCore import QObject, Qt, Signal

from core.cluster.discovery import Browser, PeerEvent

log = logging.getLogger(__name__)


class PeerBrowser(QObject):
    """Emits `event(PeerEvent)` to the GUI thread; `failed(str)` when mDNS cannot run."""

    event = Signal(object)
    failed = Signal(str)

    def __init__(self, interfaces: Sequence[str] | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.interfaces = list(interfaces) if interfaces is not None else None
        self._browser: Browser | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start browsing in the background (zeroconf binds its sockets off the GUI thread)."""
        threading.Thread(target=self._start, name="tpi-peer-browser", daemon=True).start()

    def _start(self) -> None:
        try:
            browser = Browser(self._emit, self.interfaces)
        except Exception as e:  # no usable interface, multicast blocked...
            log.warning("mDNS discovery unavailable: %s", e)
            self.failed.emit(f"Automatic discovery is unavailable ({e}); "
                             "enter the device's host:port below.")
            return
        with self._lock:
            if not self._closed:
                self._browser = browser
                return
        browser.close()  # closed while we were starting

    def _emit(self, event: PeerEvent) -> None:
        """Zeroconf thread: hand the event to the GUI thread (queued)."""
        if not self._closed:
            self.event.emit(event)

    def close(self) -> None:
        """Stop browsing; zeroconf's shutdown runs in the background."""
        with self._lock:
            self._closed = True
            browser, self._browser = self._browser, None
        if browser is not None:
            threading.Thread(target=browser.close, name="tpi-peer-browser-close",
                             daemon=True).start()


def connect_queued(browser: PeerBrowser, slot) -> None:
    """Connect `event` to `slot` with an explicit queued connection."""
    browser.event.connect(slot, Qt.ConnectionType.QueuedConnection)
