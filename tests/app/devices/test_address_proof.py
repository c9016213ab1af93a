"""A forged mDNS announcement (a stranger advertising an enrolled device's fingerprint at
its own port) does not rewrite where the app will connect; a real move, proven by a CURVE
ping to the new address with the device's enrolled key, is saved. Real processes: a
`tpi-chat worker`, a zeroconf advertiser, the app's DeviceWatch (mDNS on loopback)."""

from __future__ import annotations

import re
import socket

import pytest

from app.devices.roster import DeviceRoster
from app.devices.watch import DeviceWatch
from core.cluster.identity import fingerprint, load_or_create
from core.cluster.roster import EnrolledDevice
from core.cluster.trust import TrustedPeer, TrustStore
from tests.core.cluster.test_discovery import Child
from tests.fixtures.paired_worker import PairedWorker

FORGED_PORT = 40123  # the pairing port the forged announcements give


class _Settings:
    def get_setting(self, key, default=None):
        return default

    def set_setting(self, key, value):
        pass


@pytest.fixture
def worker(tmp_path):
    w = PairedWorker(tmp_path / "w", name="mini-pc")
    yield w
    w.stop()


def test_a_forged_announcement_does_not_move_an_enrolled_device(qtbot, tmp_path, worker):
    app_dir = tmp_path / "app"
    me = load_or_create(app_dir, name="laptop")
    TrustStore.open("master", worker.data_dir).add(TrustedPeer(me.public_key, "laptop",
                                                               "master"))
    roster = DeviceRoster(_Settings(), app_dir)
    roster.trust.add(TrustedPeer(worker.worker_key, "mini-pc", "worker"))
    # Saved as the worker announces itself: its own announcements move nothing.
    pairing_port = int(next(m[1] for line in worker.proc.lines
                            if (m := re.search(r"on 127\.0\.0\.1:(\d+),", line))))
    ctl = worker.proc.control_port
    roster.core.save(EnrolledDevice("mini-pc", worker.worker_key, "127.0.0.1", pairing_port,
                                    ctl, 2**30))
    checks: list[tuple[str, bool]] = []
    roster.checked.connect(lambda name, ok: checks.append((name, ok)))
    saved: list[int] = []  # every control port the roster saved for it
    roster.changed.connect(lambda: saved.append(roster.get(worker.worker_key).control_port))
    moved: list[str] = []
    watch = DeviceWatch(roster, ["127.0.0.1"])
    watch.reappeared.connect(moved.append)
    trap = socket.create_server(("127.0.0.1", 0))  # the stranger's port
    forger = Child("mini-pc", fingerprint(worker.worker_key), FORGED_PORT)
    try:
        forger.expect("ready")
        # Its first announcement: the worker's own control port (0 = unchanged) with
        # another pairing port. The worker answers there as the enrolled key: saved
        # (the real worker's own announcements, every 5 s, then move it back).
        qtbot.waitUntil(lambda: ("mini-pc", True) in checks, timeout=20000)
        assert "mini-pc" in moved
        # Now the stranger points the control port at its own socket: refused.
        forger.send({"op": "update", "fields": {"control_port": trap.getsockname()[1]}})
        forger.expect("updated")
        qtbot.waitUntil(lambda: ("mini-pc", False) in checks, timeout=20000)
        qtbot.wait(500)
        assert trap.getsockname()[1] not in saved  # never, not even for a moment
        assert roster.get(worker.worker_key).control_port == ctl
    finally:
        forger.kill()
        trap.close()
        watch.close()
