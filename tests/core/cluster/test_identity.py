"""Device identity: created once, persisted privately, stable fingerprint."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path

import pytest
import zmq

from core.cluster.identity import (
    IDENTITY_FILE,
    Identity,
    IdentityError,
    fingerprint,
    is_public_key,
    load_or_create,
)


def test_created_on_first_use_with_private_file(tmp_path: Path) -> None:
    ident = load_or_create(tmp_path / "data", name="mini-pc")
    path = tmp_path / "data" / IDENTITY_FILE
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ident.name == "mini-pc"
    assert is_public_key(ident.public_key) and is_public_key(ident.secret_key)
    # The pair is a real CURVE pair.
    assert zmq.curve_public(ident.secret_key.encode()).decode() == ident.public_key
    assert not list((tmp_path / "data").glob("*.tmp"))


def test_persists_across_loads(tmp_path: Path) -> None:
    a = load_or_create(tmp_path, name="mini-pc")
    b = load_or_create(tmp_path)
    assert a == b


def test_rename_keeps_keys(tmp_path: Path) -> None:
    a = load_or_create(tmp_path, name="mini-pc")
    b = load_or_create(tmp_path, name="den-pc")
    assert (b.name, b.public_key, b.secret_key) == ("den-pc", a.public_key, a.secret_key)
    assert load_or_create(tmp_path).name == "den-pc"


def test_fingerprint_is_short_grouped_hex_and_key_specific() -> None:
    a, b = Identity.generate("a"), Identity.generate("b")
    assert re.fullmatch(r"[0-9a-f]{4}(-[0-9a-f]{4}){3}", a.fingerprint)
    assert a.fingerprint == fingerprint(a.public_key)
    assert a.fingerprint != b.fingerprint


def test_secret_key_not_in_repr() -> None:
    ident = Identity.generate("a")
    assert ident.secret_key not in repr(ident)


def test_loosened_permissions_are_tightened(tmp_path: Path) -> None:
    load_or_create(tmp_path, name="x")
    path = tmp_path / IDENTITY_FILE
    os.chmod(path, 0o644)
    load_or_create(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", ["{not json", '{"name": "x"}',
                                     '{"name": "x", "public_key": "short", "secret_key": "s"}'])
def test_damaged_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / IDENTITY_FILE).write_text(content)
    with pytest.raises(IdentityError, match="delete it"):
        load_or_create(tmp_path)


def test_mismatched_key_pair_is_refused(tmp_path: Path) -> None:
    a, b = Identity.generate("a"), Identity.generate("b")
    (tmp_path / IDENTITY_FILE).write_text(json.dumps(
        {"name": "a", "public_key": a.public_key, "secret_key": b.secret_key}))
    with pytest.raises(IdentityError):
        load_or_create(tmp_path)


def test_concurrent_first_use_yields_one_identity(tmp_path: Path) -> None:
    results: list[Identity] = []
    threads = [threading.Thread(target=lambda: results.append(load_or_create(tmp_path)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.public_key for r in results}) == 1


@pytest.mark.parametrize("key", ["", "x" * 39, "~" * 40, "%" * 40, "é" * 40, " " * 40, None, 42,
                                 "0" * 41])
def test_is_public_key_refuses_junk(key: object) -> None:
    assert not is_public_key(key)
