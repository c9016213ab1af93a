"""Trusted keys store: add/remove/list, atomic writes, live reload, file locking."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from core.cluster.identity import Identity
from core.cluster.trust import TrustedPeer, TrustError, TrustStore


def _peer(name: str, role: str = "worker") -> TrustedPeer:
    return TrustedPeer(public_key=Identity.generate(name).public_key, name=name, role=role,
                       address="tcp://127.0.0.1:5000")


def test_add_list_contains_remove(tmp_path: Path) -> None:
    store = TrustStore.open("worker", tmp_path)
    a, b = _peer("a"), _peer("b")
    store.add(a)
    store.add(b)
    assert store.contains(a.public_key) and store.contains(b.public_key)
    assert [p.name for p in store.list()] == ["a", "b"]
    assert store.get(a.public_key) == a
    assert store.remove(a.public_key) == [a]
    assert not store.contains(a.public_key)
    assert store.remove("b") == [b]  # by name
    assert store.list() == []
    assert store.remove("nobody") == []


def test_persists_with_private_mode(tmp_path: Path) -> None:
    store = TrustStore.open("master", tmp_path)
    p = _peer("laptop", "master")
    store.add(p)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.path.name == "trusted-masters.json"
    assert TrustStore.open("master", tmp_path).list() == [p]


def test_readding_a_key_replaces_it(tmp_path: Path) -> None:
    store = TrustStore.open("worker", tmp_path)
    p = _peer("a")
    store.add(p)
    store.add(TrustedPeer(p.public_key, "renamed", "worker", "tcp://127.0.0.1:6000"))
    assert [(x.name, x.address) for x in store.list()] == [("renamed", "tcp://127.0.0.1:6000")]


def test_failed_write_leaves_old_store_intact(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = TrustStore.open("worker", tmp_path)
    a = _peer("a")
    store.add(a)
    before = store.path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.add(_peer("b"))
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [p.name for p in TrustStore.open("worker", tmp_path).list()] == ["a"]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_other_instance_sees_removal(tmp_path: Path) -> None:
    """Unpairing from the CLI (another process) takes effect in a running worker."""
    running = TrustStore.open("master", tmp_path)
    cli = TrustStore.open("master", tmp_path)
    p = _peer("laptop", "master")
    cli.add(p)
    assert running.contains(p.public_key)
    cli.remove(p.public_key)
    assert not running.contains(p.public_key)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    peers = [_peer(f"w{i}") for i in range(20)]

    def add_half(part: list[TrustedPeer]) -> None:
        store = TrustStore.open("worker", tmp_path)  # own instance: only the file is shared
        for p in part:
            store.add(p)

    threads = [threading.Thread(target=add_half, args=(peers[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(TrustStore.open("worker", tmp_path).list()) == 20


def test_damaged_store_is_a_clear_error(tmp_path: Path) -> None:
    store = TrustStore.open("worker", tmp_path)
    store.path.write_text("{broken")
    with pytest.raises(TrustError, match="pair your devices again"):
        store.list()


def test_rejects_wrong_role_and_bad_key(tmp_path: Path) -> None:
    store = TrustStore.open("worker", tmp_path)
    with pytest.raises(ValueError):
        store.add(_peer("m", role="master"))
    with pytest.raises(ValueError):
        store.add(TrustedPeer("not-a-key", "x", "worker"))
    with pytest.raises(ValueError):
        TrustStore.open("admin", tmp_path)


def test_entry_of_wrong_type_is_damage(tmp_path: Path) -> None:
    store = TrustStore.open("worker", tmp_path)
    store.add(_peer("a"))
    store.path.write_text(store.path.read_text().replace('"name": "a"', '"name": 7'))
    with pytest.raises(TrustError):
        TrustStore.open("worker", tmp_path).contains("x")
