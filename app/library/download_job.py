"""One catalog download on a thread of its own, reported to the GUI as Qt signals.

core.library.download does the work (huggingface_hub, resumable, verified); the signals
are emitted from the download thread and reach GUI-thread slots queued, so the GUI thread
never waits on the network. `cancel()` returns at once; the thread stops after the chunk
it is writing (at most ~1 MiB) and what arrived stays for the next attempt.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import shiboken6
from PySide6.QtCore import QObject, Signal

from core.errors import TpiError
from core.library.catalog import CatalogEntry
from core.library.download import DownloadCancelled, DownloadProgress, download_model

log = logging.getLogger(__name__)


class DownloadJob(QObject):
    """Signals: progress(DownloadProgress), done(entry id, path), failed(entry id, sentence),
    cancelled(entry id)."""

    progress = Signal(object)
    done = Signal(str, str)
    failed = Signal(str, str)
    cancelled = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._stop = threading.Event()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self.entry: CatalogEntry | None = None

    @property
    def running(self) -> bool:
        """Until its outcome is signalled (not until the thread's very end: a Download
        clicked on the outcome's signal must find the job free)."""
        return self._running.is_set()

    def start(self, entry: CatalogEntry, models_dir: Path) -> None:
        if self.running:
            raise RuntimeError("a download is already running")
        self.entry = entry
        self._stop = threading.Event()
        self._running.set()
        self._thread = threading.Thread(target=self._run, args=(entry, models_dir, self._stop),
                                        name="tpi-download", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._stop.set()

    def _run(self, entry: CatalogEntry, models_dir: Path, stop: threading.Event) -> None:
        def on_progress(p: DownloadProgress) -> None:
            if not stop.is_set():
                self._emit(self.progress, p)

        try:
            try:
                path = download_model(entry, models_dir, on_progress, stop.is_set)
            finally:
                self._running.clear()
        except DownloadCancelled:
            log.info("Download of %s cancelled", entry.repo)
            self._emit(self.cancelled, entry.id)
        except TpiError as e:
            log.warning("Download of %s failed: %s", entry.repo, e)
            text = str(e)
            self._emit(self.failed, entry.id, text[:1].upper() + text[1:])
        except Exception as e:  # a bug, but the app must survive it
            log.exception("Download of %s failed unexpectedly", entry.repo)
            self._emit(self.failed, entry.id, f"The download failed: {e}")
        else:
            log.info("Downloaded %s to %s", entry.repo, path)
            self._emit(self.done, entry.id, str(path))

    def _emit(self, signal, *args) -> None:
        """Emit unless the window that owned this job is gone (the app quit mid-download)."""
        if shiboken6.isValid(self):
            signal.emit(*args)
