"""Test helper for the app tests: the real worker process (tests/fixtures/worker_process.py)
and enrolling it in the app's roster the way the Add device dialog does."""

from __future__ import annotations

from tests.fixtures.worker_process import WorkerProcess

__all__ = ["WorkerProcess", "enroll_in_app"]


def enroll_in_app(worker: WorkerProcess, memory_budget: int) -> str:
    """Pair this process's app identity (app.store.db.data_dir()) with the worker using its
    printed code and enroll it in the app's roster; returns the worker's name."""
    from app.devices.roster import DeviceRoster
    from app.store.db import Store, data_dir
    from core.cluster.discovery import probe_manual
    from core.cluster.identity import load_or_create
    from core.cluster.pairing_client import pair_with

    store = Store()
    try:
        roster = DeviceRoster(store, data_dir())
        peer = pair_with(worker.endpoint, worker.current_code(), load_or_create(data_dir()),
                         trust=roster.trust)
        roster.enroll(peer.public_key, probe_manual(worker.host, worker.port), memory_budget)
        return peer.name
    finally:
        store.close()
