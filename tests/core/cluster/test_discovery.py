"""Discovery on loopback: workers in other processes appear, change and leave.

Zeroconf bound to 127.0.0.1 works on Linux without changing the interface, even though
lo has no MULTICAST flag: multicast sent with IP_MULTICAST_IF=127.0.0.1 is delivered to
every socket that joined 224.0.0.251 on lo, so nothing needs setting up here.
Other programs on the host may be browsing/advertising on lo too, so every check below
filters on names unique to this test run.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from zeroconf import ServiceInfo, Zeroconf

from core.cluster.discovery import SERVICE_TYPE, Browser, PeerEvent, probe_manual
from core.cluster.identity import Identity
from core.cluster.pairing_server import PairingServer
from core.cluster.peer_info import PeerInfo
from core.cluster.trust import TrustStore
from core.errors import PeerError

ROOT = Path(__file__).resolve().parents[3]
WAIT_S = 10.0


class Child:
    """An advertiser process, driven over stdin, its stdout lines in a queue."""

    def __init__(self, name: str, fp: str, port: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.core.cluster.advertiser_child", name, fp, str(port)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, word: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                if self.lines.get(timeout=0.2) == word:
                    return
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"advertiser exited with {self.proc.returncode}") from None
        raise AssertionError(f"advertiser did not say {word!r} within {WAIT_S} s")

    def send(self, cmd: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


def _wait_event(events: queue.Queue[PeerEvent], match: Callable[[PeerEvent], bool],
                seen: list[PeerEvent]) -> PeerEvent:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            e = events.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(e)
        if match(e):
            return e
    raise AssertionError(f"no matching discovery event within {WAIT_S} s; saw {seen}")


@pytest.fixture
def bad_service() -> Iterator[str]:
    """A stranger on the network advertising our type with a nonsense TXT record."""
    zc = Zeroconf(interfaces=["127.0.0.1"])
    name = f"junk-{uuid.uuid4().hex[:6]}"
    info = ServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=9,
                       properties={"v": "one", "name": name}, parsed_addresses=["127.0.0.1"])
    zc.register_service(info)
    yield name
    zc.unregister_service(info)
    zc.close()


@pytest.mark.slow
def test_browser_sees_workers_appear_update_and_leave(bad_service: str) -> None:
    tag = uuid.uuid4().hex[:6]
    names = [f"w{tag}-a", f"w{tag}-b"]
    ids = [Identity.generate(n) for n in names]
    events: queue.Queue[PeerEvent] = queue.Queue()
    seen: list[PeerEvent] = []
    mine: Callable[[PeerEvent], bool] = lambda e: e.peer.name in names  # noqa: E731
    with Browser(events.put, interfaces=["127.0.0.1"]) as browser:
        children = [Child(n, i.fingerprint, 40000 + k) for k, (n, i) in
                    enumerate(zip(names, ids, strict=True))]
        try:
            for c in children:
                c.expect("ready")
            added = {}
            while len(added) < 2:
                e = _wait_event(events, lambda e: e.kind == "add" and mine(e), seen)
                added[e.peer.name] = e
            for k, (n, i) in enumerate(zip(names, ids, strict=True)):
                p = added[n].peer
                assert p == PeerInfo(name=n, address="127.0.0.1", port=40000 + k, version=1,
                                     mem_total=8 * 2 ** 30, mem_free=5 * 2 ** 30, cores=4,
                                     platform="Linux-x86_64", fingerprint=i.fingerprint,
                                     paired=False, control_port=0)
            assert {p.name for p in browser.peers().values()} >= set(names)

            children[0].send({"op": "update", "fields": {"mem_free": 42, "paired": True}})
            children[0].expect("updated")
            e = _wait_event(events, lambda e: e.kind == "update" and e.peer.name == names[0]
                            and e.peer.mem_free == 42, seen)
            assert e.peer.paired and e.service == added[names[0]].service

            children[1].send({"op": "quit"})
            children[1].expect("bye")
            e = _wait_event(events, lambda e: e.kind == "remove" and e.peer.name == names[1],
                            seen)
            assert children[1].proc.wait(timeout=5) == 0
            assert names[1] not in {p.name for p in browser.peers().values()}
        finally:
            for c in children:
                c.kill()
    assert not [e for e in seen if bad_service in e.service]
    assert not [e for e in seen if mine(e) and e.kind == "remove" and e.peer.name == names[0]]


def test_manual_probe_asks_the_pairing_port(tmp_path: Path) -> None:
    ident = Identity.generate("mini-pc")
    with PairingServer(ident, TrustStore.open("master", tmp_path)) as server:
        info = probe_manual("127.0.0.1", server.port, timeout=3.0)
    assert (info.name, info.fingerprint, info.port, info.paired) == \
        ("mini-pc", ident.fingerprint, server.port, False)
    assert info.address == "127.0.0.1" and info.mem_total > 0


def test_manual_probe_of_a_silent_port_fails_clearly() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        with pytest.raises(PeerError, match="no answer from the device at"):
            probe_manual("127.0.0.1", silent.getsockname()[1], timeout=0.3)
    finally:
        silent.close()
