"""Test helper: a device (identity + trust store) in its own data dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.cluster.identity import Identity, load_or_create
from core.cluster.trust import TrustStore


@dataclass
class Device:
    identity: Identity
    trust: TrustStore
    data_dir: Path


def make_device(tmp_path: Path, name: str, peers_role: str) -> Device:
    """A worker stores masters (peers_role="master"); a master stores workers."""
    d = tmp_path / name
    return Device(load_or_create(d, name=name), TrustStore.open(peers_role, d), d)
