"""Downloads through huggingface_hub from a local fake hub: complete, resumed after a
dropped connection and after a cancel, and refused when the checksum does not match."""

from __future__ import annotations

import hashlib

import pytest

from core.errors import ModelError
from core.library.catalog import CatalogFile
from core.library.download import (
    MARKER,
    PARTIAL,
    ChecksumError,
    DownloadCancelled,
    download_model,
    is_downloaded,
)
from tests.core.library.conftest import REPO, entry, payload

MB = 1 << 20


def test_a_gguf_downloads_verified_with_progress(hub_env, tmp_path):
    data = payload(3 * MB)
    hub = hub_env({REPO: {"tiny.Q8_0.gguf": data}})
    seen = []
    e = entry()
    path = download_model(e, tmp_path, seen.append)
    assert path == tmp_path / "tiny" / "tiny.Q8_0.gguf"
    assert path.read_bytes() == data
    assert is_downloaded(e, tmp_path)
    assert not (tmp_path / "tiny" / PARTIAL).exists()
    assert seen[-1].stage == "Done" and seen[-1].done == seen[-1].total == len(data)
    dones = [p.done for p in seen]
    assert dones == sorted(dones)
    # huggingface_hub's calls: HEAD on the hub, then GET at the CDN's Location
    methods = [(m, where.split(":")[0]) for m, where, _ in hub.state.requests]
    assert methods == [("HEAD", "hub"), ("GET", "cdn")]


def test_a_folder_downloads_small_files_checked_by_git_hash(hub_env, tmp_path):
    config = b'{"model_type": "llama"}'
    weights = payload(2 * MB, seed=3)
    hub_env({REPO: {"config.json": config, "model.safetensors": weights}})
    e = entry(files=(CatalogFile("config.json", 1), CatalogFile("model.safetensors", 1)))
    path = download_model(e, tmp_path, lambda p: None)
    assert path == tmp_path / "tiny"
    assert (path / "config.json").read_bytes() == config
    assert (path / "model.safetensors").read_bytes() == weights
    assert (path / MARKER).is_file()


def test_a_dropped_connection_resumes_where_it_stopped(hub_env, tmp_path):
    data = payload(3 * MB)
    hub = hub_env({REPO: {"tiny.Q8_0.gguf": data}})
    hub.state.cut_after = MB + 12345
    path = download_model(entry(), tmp_path, lambda p: None)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    first, second = [r for _, _, r in hub.gets()]
    # the second GET asked only for the rest: from the last whole chunk written
    assert first == "" and second.startswith("bytes=") and second.endswith("-")
    assert 0 < int(second[6:-1]) <= MB + 12345


def test_a_cancelled_download_resumes_from_what_arrived(hub_env, tmp_path):
    data = payload(4 * MB)
    hub = hub_env({REPO: {"tiny.Q8_0.gguf": data}})
    hub.state.rate = 4 * MB
    e = entry()
    with pytest.raises(DownloadCancelled):
        download_model(e, tmp_path, lambda p: None,
                       should_stop=lambda: bool(list((tmp_path / "tiny" / PARTIAL).glob(
                           "*.part"))) and _part_size(tmp_path) >= MB)
    kept = _part_size(tmp_path)
    assert MB <= kept < len(data)
    assert not is_downloaded(e, tmp_path)
    hub.state.rate = None
    path = download_model(e, tmp_path, lambda p: None)
    assert path.read_bytes() == data
    assert hub.gets()[-1][2] == f"bytes={kept}-"


def test_a_checksum_mismatch_deletes_the_file(hub_env, tmp_path):
    data = payload(2 * MB)
    hub = hub_env({REPO: {"tiny.Q8_0.gguf": data}})
    hub.state.corrupt = True
    e = entry()
    with pytest.raises(ChecksumError, match="damaged"):
        download_model(e, tmp_path, lambda p: None)
    folder = tmp_path / "tiny"
    assert not (folder / "tiny.Q8_0.gguf").exists()
    assert not list(folder.rglob("*.part"))  # wrong bytes are not resumed
    hub.state.corrupt = False
    assert download_model(e, tmp_path, lambda p: None).read_bytes() == data


def test_unknown_repo_and_file_are_sentences(hub_env, tmp_path):
    hub_env({REPO: {"tiny.Q8_0.gguf": payload(100)}})
    with pytest.raises(ModelError, match="has no model nobody/nothing"):
        download_model(entry(repo="nobody/nothing"), tmp_path, lambda p: None)
    with pytest.raises(ModelError, match="has no file other.gguf"):
        download_model(entry(files=(CatalogFile("other.gguf", 1),)), tmp_path,
                       lambda p: None)


def test_no_hub_is_a_sentence(hub_env, tmp_path, monkeypatch):
    hub = hub_env({})
    hub.stop()
    with pytest.raises(ModelError, match="cannot reach"):
        download_model(entry(), tmp_path, lambda p: None)


def _part_size(root) -> int:
    parts = list((root / "tiny" / PARTIAL).glob("*.part"))
    return parts[0].stat().st_size if parts else 0


def test_more_bytes_than_the_hub_announced_are_refused(hub_env, tmp_path):
    hub = hub_env({REPO: {"tiny.Q8_0.gguf": payload(2 * MB)}})
    hub.state.size_lie = -1000  # the CDN sends 1000 bytes more than X-Linked-Size
    with pytest.raises(ChecksumError, match="longer than the hub said"):
        download_model(entry(), tmp_path, lambda p: None)
    assert not list((tmp_path / "tiny").rglob("*.part"))


def test_a_file_far_larger_than_the_catalog_says_is_not_downloaded(hub_env, tmp_path):
    hub = hub_env({REPO: {"tiny.Q8_0.gguf": payload(100)}})
    hub.state.size_lie = 50 * 10**9  # the hub now says 50 GB
    with pytest.raises(ModelError, match="not about"):
        download_model(entry(), tmp_path, lambda p: None)
    assert hub.gets() == []  # nothing was fetched


def test_offline_mode_is_a_sentence(hub_env, tmp_path, monkeypatch):
    from huggingface_hub import constants

    hub = hub_env({REPO: {"tiny.Q8_0.gguf": payload(100)}})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        download_model(entry(), tmp_path, lambda p: None)
    assert hub.state.requests == []
