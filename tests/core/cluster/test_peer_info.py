"""PeerInfo TXT encoding: round trip, and strangers' odd records are ignored."""

from __future__ import annotations

import pytest

from core.cluster.identity import Identity
from core.cluster.peer_info import PeerInfo, local_peer_info
from core.comm.codec import PROTOCOL_VERSION

INFO = PeerInfo(name="mini-pc", address="127.0.0.1", port=5000, version=1,
                mem_total=8 * 2 ** 30, mem_free=3 * 2 ** 30, cores=4, platform="Linux-x86_64",
                fingerprint="1a2b-3c4d-5e6f-7081", paired=True, control_port=5001)


def test_txt_round_trip_bytes_and_str() -> None:
    txt = INFO.to_txt()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in txt.items())
    assert PeerInfo.from_txt(txt, "127.0.0.1", 5000) == INFO
    as_bytes = {k.encode(): v.encode() for k, v in txt.items()}
    assert PeerInfo.from_txt(as_bytes, "127.0.0.1", 5000) == INFO
    assert INFO.endpoint == "tcp://127.0.0.1:5000"


@pytest.mark.parametrize("change", [
    {"v": "-1"}, {"v": "1.0"}, {"mem_total": "lots"}, {"mem_free": " 5"}, {"cores": "1_0"},
    {"name": ""}, {"name": "x" * 65}, {"name": "evil\nname"}, {"platform": "p" * 65},
    {"fp": "zzzz-zzzz-zzzz-zzzz"}, {"fp": "1a2b3c4d"}, {"paired": "yes"}, {"ctl": "70000"},
    {"mem_total": "9" * 30},
])
def test_malformed_txt_is_ignored(change: dict[str, str]) -> None:
    txt = {**INFO.to_txt(), **change}
    assert PeerInfo.from_txt(txt, "127.0.0.1", 5000) is None


@pytest.mark.parametrize("missing", ["v", "name", "fp", "paired", "mem_total"])
def test_missing_key_is_ignored(missing: str) -> None:
    txt = INFO.to_txt()
    del txt[missing]
    assert PeerInfo.from_txt(txt, "127.0.0.1", 5000) is None


def test_valueless_key_and_bad_port_are_ignored() -> None:
    assert PeerInfo.from_txt({**INFO.to_txt(), "name": None}, "127.0.0.1", 5000) is None
    assert PeerInfo.from_txt({b"name": b"\xff\xfe"}, "127.0.0.1", 5000) is None
    assert PeerInfo.from_txt(INFO.to_txt(), "127.0.0.1", 0) is None


def test_local_peer_info_describes_this_device() -> None:
    ident = Identity.generate("here")
    info = local_peer_info(ident, "127.0.0.1", 5000, paired=False)
    assert info.name == "here" and info.fingerprint == ident.fingerprint
    assert info.version == PROTOCOL_VERSION
    assert info.mem_total >= info.mem_free > 0 and info.cores >= 1 and info.platform
    assert PeerInfo.from_txt(info.to_txt(), "127.0.0.1", 5000) == info
