"""Manifests and block reads: damage of any kind becomes one clear ShardError."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core.errors import ShardError
from core.model.config import load_config
from core.shard.blocks import FORMAT_VERSION, MANIFEST, attn_block, mlp_block
from core.shard.manifest import load_manifest, read_block, verify_block, verify_rank
from core.shard.plan import make_plan
from core.shard.splitter import split_model


@pytest.fixture
def split(tiny_model, tmp_path) -> list[Path]:
    """A fresh 2-rank split of a tiny Qwen2 (each test may damage it)."""
    model_dir = tiny_model("qwen2")
    return split_model(model_dir, make_plan(load_config(model_dir), [1, 1]), tmp_path).rank_dirs


def test_sha256_matches_the_files(split) -> None:
    for d in split:
        m = verify_rank(d, full=True)
        for b in m.blocks:
            assert hashlib.sha256((d / b.file).read_bytes()).hexdigest() == b.sha256


def test_manifest_json_layout(split) -> None:
    data = json.loads((split[1] / MANIFEST).read_text())
    assert set(data) == {
        "format_version",
        "model_hash",
        "rank",
        "dtype",
        "config",
        "plan",
        "blocks",
    }
    assert data["format_version"] == FORMAT_VERSION and data["rank"] == 1
    assert set(data["blocks"][0]) == {"name", "file", "bytes", "sha256", "tensors"}


def test_truncated_block_gives_a_clear_error(split) -> None:
    d = split[1]
    m = load_manifest(d)
    info = m.block(mlp_block(1))
    with open(d / info.file, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ShardError) as e:
        read_block(d, m, mlp_block(1))
    msg = str(e.value)
    assert msg == (
        f"shard file rank1/L001.mlp.safetensors is truncated or corrupt (expected "
        f"{info.bytes} bytes, found 1000); delete {d} to re-split"
    )
    with pytest.raises(ShardError, match="truncated"):
        verify_block(d, mlp_block(1))
    read_block(d, m, mlp_block(0))  # the others still load


def test_corrupt_header_of_the_right_size(split) -> None:
    d = split[0]
    m = load_manifest(d)
    path = d / m.block(attn_block(0)).file
    data = bytearray(path.read_bytes())
    data[8:40] = b"#" * 32  # garbage inside the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="rank0/L000.attn.safetensors is truncated or corrupt"):
        read_block(d, m, attn_block(0))


def test_flipped_data_byte_is_caught_by_the_hash(split) -> None:
    d = split[0]
    m = load_manifest(d)
    path = d / m.block(mlp_block(2)).file
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    verify_block(d, m.block(mlp_block(2)), full=False)  # same size: the cheap check passes
    with pytest.raises(ShardError, match="sha256"):
        verify_block(d, m.block(mlp_block(2)), full=True)
    with pytest.raises(ShardError, match="sha256"):
        read_block(d, m, mlp_block(2), check_hash=True)


def test_missing_block_file_and_unknown_block(split) -> None:
    d = split[1]
    m = load_manifest(d)
    (d / "L002.attn.safetensors").unlink()
    with pytest.raises(ShardError, match="rank1/L002.attn.safetensors is missing"):
        read_block(d, m, attn_block(2))
    with pytest.raises(ShardError, match="no block named 'embed'"):
        read_block(d, m, "embed")


def test_missing_manifest(split, tmp_path) -> None:
    (split[1] / MANIFEST).unlink()
    with pytest.raises(ShardError, match="incomplete"):
        load_manifest(split[1])
    with pytest.raises(ShardError, match="does not exist"):
        load_manifest(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: "{not json",
        lambda d: json.dumps([1, 2]),
        lambda d: json.dumps({**d, "plan": "x"}),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "config"}),
        lambda d: json.dumps({**d, "rank": 7}),
        lambda d: json.dumps({**d, "dtype": "int4"}),
        lambda d: json.dumps(
            {**d, "blocks": [{**d["blocks"][0], "name": "../../x", "file": "../../x"}]}
        ),
        lambda d: json.dumps({**d, "blocks": [{**d["blocks"][0], "file": "/etc/passwd"}]}),
    ],
    ids=["json", "list", "plan", "config", "rank", "dtype", "escape-name", "escape-file"],
)
def test_corrupt_manifest(split, damage) -> None:
    path = split[1] / MANIFEST
    path.write_text(damage(json.loads(path.read_text())))
    with pytest.raises(ShardError, match="rank1/manifest.json is corrupt"):
        load_manifest(split[1])


def test_other_format_version(split) -> None:
    path = split[0] / MANIFEST
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 99}))
    want = f"format version 99 but this app reads version {FORMAT_VERSION}"
    with pytest.raises(ShardError, match=want):
        load_manifest(split[0])


def test_wrong_tensors_inside_a_block(split) -> None:
    from safetensors.torch import save_file

    d = split[0]
    m = load_manifest(d)
    info = m.block(mlp_block(0))
    save_file({"norm": torch.zeros(64)}, str(d / info.file))
    # A manifest whose size matches the new file, so only the tensor check can object.
    info = replace(info, bytes=(d / info.file).stat().st_size)
    m = replace(m, blocks=tuple(info if b.name == info.name else b for b in m.blocks))
    with pytest.raises(ShardError, match="does not hold the tensors"):
        read_block(d, m, mlp_block(0))


def test_read_block_from_many_threads(split) -> None:
    d = split[0]
    m = load_manifest(d)
    want = {n: read_block(d, m, n) for n in m.block_names()}
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                for n in m.block_names():
                    got = read_block(d, m, n)
                    assert all(torch.equal(got[k], want[n][k]) for k in want[n])
        except BaseException as e:  # surfaced in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
