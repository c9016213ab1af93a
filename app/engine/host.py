"""GUI-side handle on the engine thread: starts it, forwards requests, shuts it down.

Requests travel as queued signals to the EngineWorker living in its QThread, so nothing
here ever blocks the GUI thread (except a bounded wait at shutdown).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QThread, Signal

from app.engine.api_host import ApiServerHost
from app.engine.worker import EngineWorker, Loader, default_loader
from core.cluster.worker_spec import WorkerSpec
from core.engine.options import RunOptions
from core.engine.sampler import SamplingParams


class EngineHost(QObject):
    """Owns the engine QThread and its worker; the worker's signals are public."""

    _load_requested = Signal(int, object, object)
    _send_requested = Signal(int, list, str, object)
    _shutdown_requested = Signal()

    def __init__(self, loader: Loader = default_loader, parent: QObject | None = None):
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("tpi-engine")
        self.worker = EngineWorker(loader)
        #: the local API server over the loaded model (Settings -> Local API server)
        self.api = ApiServerHost(self.worker.run_on_engine, self.worker.api_step, self)
        self.worker.api = self.api
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.start)
        self._load_requested.connect(self.worker.load)
        self._send_requested.connect(self.worker.send)
        self._shutdown_requested.connect(self.worker.shutdown)
        self._load_seq = 0
        self._closed = False
        self.thread.start()

    def load(self, model: str | None, opts: RunOptions) -> int:
        """Start loading `model`; returns the load's sequence number (for cancel_load)."""
        self._load_seq += 1
        self._load_requested.emit(self._load_seq, model, opts)
        return self._load_seq

    def cancel_load(self) -> None:
        """Stop waiting for the current load: its result is discarded."""
        self.worker.cancel_load(self._load_seq)

    def set_remote_devices(self, specs: list[WorkerSpec]) -> None:
        """The paired devices the next load may use (thread-safe, never waits)."""
        self.worker.set_remote_devices(specs)

    def set_context_overflow(self, overflow: str) -> None:
        """What later replies (the API's too) do when a conversation outgrows the context
        (never waits)."""
        self.worker.set_context_overflow(overflow)
        self.api.set_context_overflow(overflow)

    def send(self, messages: list[dict], system: str, params: SamplingParams) -> None:
        self._send_requested.emit(self.worker.reply_requested(), messages, system, params)

    def stop(self) -> None:
        self.worker.stop()

    def shutdown(self, wait_ms: int = 10000) -> None:
        """Stop any reply, close the model and end the thread (waits at most `wait_ms`)."""
        if self._closed:
            return
        self._closed = True
        self.api.stop()  # before the model closes; fails the API's waiting requests
        self.worker.stop()
        self.worker.cancel_load(self._load_seq)
        self._shutdown_requested.emit()  # the worker closes the model, then quits the thread
        if not self.thread.wait(wait_ms):
            self.thread.quit()  # still busy (a long load): stop waiting for it
            self.thread.wait(1000)
