"""Opening pairing on a worker that is already running (a service on a headless mini PC).

A running worker holds DATA_DIR/worker.lock for its whole life. `tpi-chat worker --pair`
on the same device and data folder finds the lock taken, writes its request to
DATA_DIR/pairing-request.json and waits for the worker's answer in
DATA_DIR/pairing-open.json (the code and until when it is open), which it prints. The
worker polls for requests twice a second and deletes the answer when the window closes.

Both files are created owner-only (0600) in the data folder, which already holds the
worker's secret key: whoever can write there can open pairing, and could do worse.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from core.errors import TpiError

LOCK_FILE = "worker.lock"
REQUEST_FILE = "pairing-request.json"
OPEN_FILE = "pairing-open.json"
_MAX_FILE = 4096


class DaemonLock:
    """An exclusive lock on DATA_DIR/worker.lock, held while a worker serves that folder
    (released by the OS if the process dies)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True when taken; False when another live worker holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_FILE + 1)
        data = json.loads(raw) if len(raw) <= _MAX_FILE else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class PairingRequests:
    """The running worker's side: take requests, publish and withdraw answers."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir)
        self._answered: str | None = None
        for name in (REQUEST_FILE, OPEN_FILE):  # left over from a worker that died
            _remove(self.dir / name)

    def take(self) -> tuple[str, float] | None:
        """(request id, minutes) of a waiting request, which is consumed."""
        path = self.dir / REQUEST_FILE
        if not path.exists():
            return None
        data = _read(path)
        _remove(path)
        if data is None:
            return None
        rid, minutes = data.get("id"), data.get("minutes")
        if not (isinstance(rid, str) and 0 < len(rid) <= 64 and rid.isalnum()):
            return None
        if not isinstance(minutes, int | float) or isinstance(minutes, bool):
            return None
        return rid, float(minutes)

    def answer(self, rid: str, **fields: Any) -> None:
        try:
            _write_private(self.dir / OPEN_FILE, {"id": rid, **fields})
            self._answered = rid
        except OSError:
            pass  # the asking command times out and says so

    def withdraw(self) -> None:
        if self._answered is not None:
            _remove(self.dir / OPEN_FILE)
            self._answered = None


def ask_running_worker(data_dir: Path, minutes: float, timeout: float = 10.0
                       ) -> dict[str, Any]:
    """Ask the worker that holds `data_dir` to open pairing; its answer (code, name,
    address, until). TpiError when it does not answer within `timeout`."""
    rid = secrets.token_hex(8)
    request = Path(data_dir) / REQUEST_FILE
    try:
        _write_private(request, {"id": rid, "minutes": minutes})
    except OSError as e:
        raise TpiError(f"cannot ask the running worker to open pairing: {e}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = _read(Path(data_dir) / OPEN_FILE)
        if answer is not None and answer.get("id") == rid:
            return answer
        time.sleep(0.1)
    _remove(request)
    raise TpiError(f"a worker holds the data folder {data_dir} but did not open pairing "
                   f"within {timeout:g} s; is it stuck? Restart it with `tpi-chat worker "
                   "--pair`.")
