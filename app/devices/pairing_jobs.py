"""Network work of the Add device dialog, run on QThreadPool threads (never the GUI thread).

`PairJob` runs `pair_with` (SPAKE2 by short code, up to PAIR_TIMEOUT_S); `ProbeJob` runs
`probe_manual` (the host:port fallback). Each reports through its `signals` object with
queued connections: `succeeded(object)` or `failed(str)` (a message for the user).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from core.cluster.discovery import probe_manual
from core.cluster.identity import load_or_create
from core.cluster.pairing_client import pair_with
from core.cluster.trust import TrustStore
from core.errors import TpiError

PAIR_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 3.0

log = logging.getLogger(__name__)


class JobSignals(QObject):
    """Outcome of one job (emitted from a pool thread, delivered queued)."""

    succeeded = Signal(object)
    failed = Signal(str)


class _Job(QRunnable):
    def __init__(self) -> None:
        super().__init__()
        self.signals = JobSignals()
        self.setAutoDelete(True)

    def run(self) -> None:  # noqa: D102 (QRunnable API)
        try:
            result = self.work()
        except TpiError as e:  # PairingError, PeerError: already worded for the user
            log.warning("%s failed: %s", self.describe(), e)
            self.signals.failed.emit(str(e))
        except Exception as e:  # a bug: say so rather than hang the dialog
            log.exception("%s failed unexpectedly", self.describe())
            self.signals.failed.emit(f"Unexpected error: {e}")
        else:
            self.signals.succeeded.emit(result)

    def work(self) -> object:
        raise NotImplementedError

    def describe(self) -> str:
        """What the job does, for the log (never the pairing code: it is a secret)."""
        return type(self).__name__

    def start(self, pool: QThreadPool | None = None) -> JobSignals:
        """Queue on `pool` (default: the global pool); returns the signals to connect."""
        signals = self.signals
        (pool or QThreadPool.globalInstance()).start(self)
        return signals


class PairJob(_Job):
    """Pair with the worker at `endpoint`; succeeded(PairedPeer). Stores its key in `trust`."""

    def __init__(self, endpoint: str, code: str, data_dir: Path, trust: TrustStore,
                 timeout: float = PAIR_TIMEOUT_S):
        super().__init__()
        self.endpoint, self.code, self.data_dir = endpoint, code, data_dir
        self.trust, self.timeout = trust, timeout

    def describe(self) -> str:
        return f"Pairing with {self.endpoint}"

    def work(self) -> object:
        identity = load_or_create(self.data_dir)
        return pair_with(self.endpoint, self.code, identity, self.timeout, trust=self.trust)


class ProbeJob(_Job):
    """Ask host:port who it is; succeeded(PeerInfo)."""

    def __init__(self, host: str, port: int, timeout: float = PROBE_TIMEOUT_S):
        super().__init__()
        self.host, self.port, self.timeout = host, port, timeout

    def describe(self) -> str:
        return f"Asking {self.host}:{self.port} who it is"

    def work(self) -> object:
        return probe_manual(self.host, self.port, self.timeout)
