"""Shard shipping in one process: sender and ShardCache joined through the real codec.

Every message goes through encode/decode as on the wire, but the worker side is called
synchronously, so these tests are fast and deterministic. The ZeroMQ, two-process
version lives in test_shipping_wire.py.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

import core.cluster.disk_budget as disk_budget
import core.cluster.shard_cache as shard_cache
from core.cluster.shard_cache import PART, HashMismatch, NoSpace, ShardCache
from core.cluster.ship_messages import REPLY_OPS, REQUEST_OPS, check_name
from core.cluster.ship_receiver import serve_shipping
from core.cluster.ship_sender import ShipProgress, ship_rank, split_id_for
from core.comm.codec import Message, decode, encode
from core.errors import ProtocolError, ShardError
from core.shard.blocks import MANIFEST
from core.shard.manifest import load_manifest, verify_block

CHUNK = 4096  # small, so every file takes several chunks and resume is exercised
BAD_NAMES = ["../../x", "/etc/passwd", ".hidden", "a/b", "a\\b", "x\x00y", "n" * 200, "..",
             "", ".", "x\n", "CON", "nul.txt", "-rf", "é", "a..b"]


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Rank dirs of a real 2-rank split of a tiny Llama (read-only: copy before damaging)."""
    from core.model.config import load_config
    from core.shard.plan import make_plan
    from core.shard.splitter import split_model
    from tests.fixtures.tiny_models import make_tiny_model

    base = tmp_path_factory.mktemp("ship")
    model = make_tiny_model(base / "model")
    return split_model(model, make_plan(load_config(model), world_size=2), base / "out").rank_dirs


class Link:
    """send/recv callables for ship_rank, answered by serve_shipping through the codec."""

    def __init__(self, cache: ShardCache,
                 tamper: Callable[[str, dict, list[torch.Tensor]], None] | None = None):
        self.cache = cache
        self.tamper = tamper
        self.replies: deque[list] = deque()
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, op: str, meta: dict[str, Any], tensors: Sequence[torch.Tensor] = ()) -> None:
        msg = decode(encode(op, meta, tensors), REQUEST_OPS, writable=True)
        self.sent.append((op, dict(msg.meta)))
        if self.tamper:
            self.tamper(msg.op, msg.meta, msg.tensors)
        rop, rmeta = serve_shipping(self.cache, msg)
        self.replies.append(encode(rop, rmeta))

    def recv(self, timeout: float) -> Message | None:
        return decode(self.replies.popleft(), REPLY_OPS) if self.replies else None

    def chunks(self) -> list[dict[str, Any]]:
        return [m for op, m in self.sent if op == "ship_chunk"]


def _ship(link: Link, rank_dir: Path, progress=None, **kw):
    return ship_rank(link.send, link.recv, rank_dir, split_id_for(rank_dir), progress,
                     chunk_size=CHUNK, **kw)


def _tree(p: Path) -> list[tuple[str, int]]:
    return sorted((str(x.relative_to(p)), x.stat().st_size if x.is_file() else -1)
                  for x in p.rglob("*"))


def _flip_byte(path: Path, at: int = 100) -> None:
    """Damage a file in place (same size), as a bad disk would; its mtime moves on."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0xFF]))
    # Coarse-timestamp filesystems could keep the old mtime; make the change visible.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# ---- the sender against the cache -----------------------------------------------------------


def test_ship_lands_a_loadable_verified_rank_dir_and_a_second_ship_sends_nothing(split, tmp_path):
    src = split[1]
    cache = ShardCache(tmp_path / "cache")
    events: list[ShipProgress] = []
    first = _ship(Link(cache), src, events.append)
    manifest = load_manifest(src)
    got = cache.rank_dir(split_id_for(src))
    assert load_manifest(got) == manifest
    for b in manifest.blocks:
        verify_block(got, b, full=True)
        assert (got / b.file).read_bytes() == (src / b.file).read_bytes()
    assert (first.files_sent, first.files_skipped) == (len(manifest.blocks), 0)
    assert first.bytes_sent == manifest.total_bytes
    assert not list(got.glob("*" + PART))

    # Progress: monotonic, ends at 100 %, file counts consistent.
    done = [e.bytes_done for e in events]
    assert done == sorted(done) and done[0] == 0
    assert events[-1].bytes_done == events[-1].bytes_total == manifest.total_bytes
    assert events[-1].files_done == events[-1].files_total == len(manifest.blocks)
    assert all(e.rate_bps is None or e.rate_bps >= 0 for e in events)

    again = Link(cache)
    second = _ship(again, src)
    assert (second.bytes_sent, second.files_sent) == (0, 0)
    assert second.files_skipped == len(manifest.blocks)
    assert again.chunks() == []
    assert load_manifest(got) == manifest


def test_progress_carries_the_links_rate_and_the_time_left(split, tmp_path):
    """A link moving RATE bytes/s in fake time (each chunk advances the clock as it is
    sent): after the first second every event says RATE and the time the rest will take."""
    src = split[1]
    total = load_manifest(src).total_bytes
    rate = total / 20  # a 20 s transfer: several rate windows long
    clock = [0.0]

    def link_time(op: str, meta: dict, tensors: list[torch.Tensor]) -> None:
        if op == "ship_chunk":
            clock[0] += tensors[0].numel() / rate

    events: list[tuple[float, ShipProgress]] = []
    # one request in flight, so an ack arrives as its chunk's time is up
    _ship(Link(ShardCache(tmp_path / "cache"), link_time), src,
          lambda e: events.append((clock[0], e)), window=1, clock=lambda: clock[0])
    end = events[-1][0]
    assert end == pytest.approx(20)
    early = [e for t, e in events if t < 0.99]
    assert early and all(e.rate_bps is None and e.eta_s is None for e in early)
    measured = [(t, e) for t, e in events if 1.01 < t and e.bytes_done < e.bytes_total]
    assert len(measured) > 10
    for t, e in measured:
        assert e.rate_bps == pytest.approx(rate, rel=0.02)
        assert e.eta_s == pytest.approx(end - t, rel=0.02, abs=0.05)
    assert events[-1][1].eta_s is None  # finished: nothing left


def test_interrupted_ship_resumes_from_the_partial_offset(split, tmp_path):
    src = split[1]
    cache = ShardCache(tmp_path / "cache")
    total = load_manifest(src).total_bytes

    def cancel_after_15(e: ShipProgress) -> None:
        if e.bytes_done >= 15 * CHUNK:  # a Cancel button, mid-way through a file
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _ship(Link(cache), src, cancel_after_15)
    sid = split_id_for(src)
    assert not cache.is_complete(sid)
    parts = list(cache.rank_dir(sid).glob("*" + PART))
    assert parts and all(p.stat().st_size > 0 for p in parts)

    cache.close()  # a restarted worker: nothing survives but the disk
    cache = ShardCache(tmp_path / "cache")
    link = Link(cache)
    res = _ship(link, src)
    assert 0 < res.bytes_sent < total
    assert res.files_skipped >= 1
    assert link.chunks()[0]["offset"] > 0  # resumed inside the partial file, not from 0
    for b in load_manifest(cache.rank_dir(sid)).blocks:
        verify_block(cache.rank_dir(sid), b, full=True)


def test_a_file_corrupted_on_the_worker_is_detected_by_hash_and_resent(split, tmp_path):
    src = split[1]
    cache = ShardCache(tmp_path / "cache")
    _ship(Link(cache), src)
    got = cache.rank_dir(split_id_for(src))
    victim = load_manifest(src).blocks[3]
    _flip_byte(got / victim.file)

    link = Link(cache)
    res = _ship(link, src)
    assert res.files_sent == 1 and res.bytes_sent == victim.bytes
    assert {m["file"] for m in link.chunks()} == {victim.file}
    verify_block(got, victim, full=True)


def test_verified_files_are_not_rehashed_until_they_change(split, tmp_path, monkeypatch):
    src = split[1]
    cache = ShardCache(tmp_path / "cache")
    _ship(Link(cache), src)
    calls: list[Path] = []
    real = shard_cache.sha256_file
    monkeypatch.setattr(shard_cache, "sha256_file", lambda p: calls.append(p) or real(p))
    _ship(Link(ShardCache(tmp_path / "cache")), src)
    assert calls == []  # the sidecar vouched for every file
    victim = load_manifest(src).blocks[0]
    _flip_byte(cache.rank_dir(split_id_for(src)) / victim.file)
    _ship(Link(ShardCache(tmp_path / "cache")), src)
    assert [p.name for p in calls] == [victim.file]


def test_a_chunk_damaged_in_transit_makes_that_file_resent(split, tmp_path):
    src = split[1]
    victim = load_manifest(src).blocks[1].file
    hits = []

    def damage_once(op: str, meta: dict, tensors: list[torch.Tensor]) -> None:
        if op == "ship_chunk" and meta["file"] == victim and meta["offset"] == 0 and not hits:
            hits.append(1)
            tensors[0][7] ^= 0xFF

    cache = ShardCache(tmp_path / "cache")
    events: list[ShipProgress] = []
    res = _ship(Link(cache, damage_once), src, events.append)
    assert hits and res.files_sent == len(load_manifest(src).blocks)
    assert res.bytes_sent == load_manifest(src).total_bytes + load_manifest(src).block(
        victim.removesuffix(".safetensors")).bytes
    done = [e.bytes_done for e in events]
    assert done == sorted(done) and events[-1].bytes_done == events[-1].bytes_total
    verify_block(cache.rank_dir(split_id_for(src)), victim.removesuffix(".safetensors"),
                 full=True)


def test_a_file_always_damaged_in_transit_gives_up_with_a_clear_error(split, tmp_path):
    src = split[1]
    victim = load_manifest(src).blocks[0].file

    def damage(op: str, meta: dict, tensors: list[torch.Tensor]) -> None:
        if op == "ship_chunk" and meta["file"] == victim and meta["offset"] == 0:
            tensors[0][0] ^= 0xFF

    with pytest.raises(ShardError, match="arrived damaged 3 times"):
        _ship(Link(ShardCache(tmp_path / "cache"), damage), src, max_retries=2)


def test_a_corrupt_local_shard_is_refused_before_the_worker_keeps_it(split, tmp_path):
    src = tmp_path / split[1].parent.name / "rank1"
    shutil.copytree(split[1], src)
    victim = load_manifest(src).blocks[2]
    _flip_byte(src / victim.file)
    cache = ShardCache(tmp_path / "cache")
    with pytest.raises(ShardError, match="on this device is corrupt"):
        _ship(Link(cache), src)
    assert not (cache.rank_dir(split_id_for(src)) / victim.file).exists()


# ---- the cache on its own: hostile or wrong requests -----------------------------------------


def _begin(cache: ShardCache, src: Path) -> tuple[str, dict]:
    sid = split_id_for(src)
    m = load_manifest(src)
    cache.begin(sid, m.to_dict())
    return sid, m.to_dict()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_and_nothing_is_written(split, tmp_path, name):
    outer = tmp_path / "home"
    root = outer / "cache" / "root"
    cache = ShardCache(root)
    sid, mdict = _begin(cache, split[1])
    before = _tree(tmp_path)

    with pytest.raises(ProtocolError, match="not a plain name"):
        check_name(name)
    with pytest.raises(ProtocolError):
        cache.begin(name, mdict)
    with pytest.raises(ProtocolError):
        cache.chunk(sid, name, 0, b"\x00" * 16)
    with pytest.raises(ProtocolError):
        cache.end_file(sid, name, "0" * 64)
    with pytest.raises(ProtocolError):
        cache.commit(name)
    evil = {**mdict, "blocks": [{**mdict["blocks"][0], "name": name, "file": name}]}
    with pytest.raises(ProtocolError, match="manifest"):
        cache.begin("fine-id", evil)
    # Through the message handler: a ship_error reply, not an exception.
    for op, meta, tensors in [
        ("ship_begin", {"seq": 1, "split_id": name, "manifest": mdict}, []),
        ("ship_chunk", {"seq": 2, "split_id": sid, "file": name, "offset": 0},
         [torch.zeros(8, dtype=torch.uint8)]),
        ("ship_end_file", {"seq": 3, "split_id": sid, "file": name, "sha256": "0" * 64}, []),
    ]:
        rop, rmeta = serve_shipping(cache, decode(encode(op, meta, tensors), REQUEST_OPS))
        assert (rop, rmeta["code"], rmeta["seq"]) == ("ship_error", "bad_request", meta["seq"])

    assert _tree(tmp_path) == before  # nothing written anywhere, inside the root or out
    # ...and the cache still works.
    res = _ship(Link(cache), split[1])
    assert res.files_sent == len(mdict["blocks"])


def test_a_symlink_out_of_the_cache_is_refused(split, tmp_path):
    root = tmp_path / "root"
    cache = ShardCache(root)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    sid = split_id_for(split[1])
    (root / sid).symlink_to(outside)
    with pytest.raises(ProtocolError, match="outside the shard cache"):
        cache.begin(sid, load_manifest(split[1]).to_dict())
    assert list(outside.iterdir()) == []


def test_chunks_at_wrong_offsets_or_too_big_are_refused(split, tmp_path):
    cache = ShardCache(tmp_path / "c", max_chunk=1024)
    sid, mdict = _begin(cache, split[1])
    b = load_manifest(split[1]).blocks[0]
    data = (split[1] / b.file).read_bytes()
    assert cache.chunk(sid, b.file, 0, data[:1000]) == 1000
    with pytest.raises(ProtocolError, match="no gap or overlap"):
        cache.chunk(sid, b.file, 1500, data[1500:2000])  # gap
    with pytest.raises(ProtocolError, match="no gap or overlap"):
        cache.chunk(sid, b.file, 500, data[500:1500])  # overlap
    with pytest.raises(ProtocolError, match="refused"):
        cache.chunk(sid, b.file, 1000, data[1000:3000])  # over max_chunk
    with pytest.raises(ProtocolError, match="refused"):
        cache.chunk(sid, b.file, 1000, b"")
    with pytest.raises(ProtocolError, match="larger than"):
        cache.chunk(sid, b.file, b.bytes - 10, b"x" * 11)
    with pytest.raises(ProtocolError, match="holds 1000 of"):
        cache.end_file(sid, b.file, b.sha256)  # incomplete: kept for resume
    assert (cache.rank_dir(sid) / (b.file + PART)).stat().st_size == 1000
    with pytest.raises(ProtocolError, match="not a file of shard"):
        cache.chunk(sid, "L099.attn.safetensors", 0, b"x")
    with pytest.raises(ProtocolError, match="ship_begin first"):
        cache.chunk("other-split", b.file, 0, b"x")
    # The caps of the wire: a chunk frame above the 8 MiB maximum is refused too.
    big = ShardCache(tmp_path / "d", max_chunk=1 << 30)
    assert big.max_chunk == 8 << 20


def test_a_sha256_mismatch_deletes_the_part_and_says_resend(split, tmp_path):
    cache = ShardCache(tmp_path / "c")
    sid, _ = _begin(cache, split[1])
    b = load_manifest(split[1]).blocks[0]
    data = bytearray((split[1] / b.file).read_bytes())
    data[-1] ^= 1
    cache.chunk(sid, b.file, 0, bytes(data))
    with pytest.raises(HashMismatch, match="sent again"):
        cache.end_file(sid, b.file, b.sha256)
    assert not (cache.rank_dir(sid) / (b.file + PART)).exists()
    assert not (cache.rank_dir(sid) / b.file).exists()
    with pytest.raises(ProtocolError, match="differs from its manifest"):
        cache.end_file(sid, b.file, "a" * 64)
    rop, rmeta = serve_shipping(cache, decode(encode(
        "ship_chunk", {"seq": 9, "split_id": sid, "file": b.file, "offset": 0},
        [torch.frombuffer(bytearray(data), dtype=torch.uint8)]), REQUEST_OPS))
    assert rop == "ship_ack"
    rop, rmeta = serve_shipping(cache, decode(encode(
        "ship_end_file", {"seq": 10, "split_id": sid, "file": b.file, "sha256": b.sha256}),
        REQUEST_OPS))
    assert (rop, rmeta["code"], rmeta["file"]) == ("ship_error", "hash_mismatch", b.file)


def test_commit_needs_every_file_and_writes_the_manifest_last(split, tmp_path):
    cache = ShardCache(tmp_path / "c")
    sid, _ = _begin(cache, split[1])
    m = load_manifest(split[1])
    for b in m.blocks[:-1]:
        cache.chunk(sid, b.file, 0, (split[1] / b.file).read_bytes())
        cache.end_file(sid, b.file, b.sha256)
    with pytest.raises(ProtocolError, match="1 files are not complete"):
        cache.commit(sid)
    assert not (cache.rank_dir(sid) / MANIFEST).exists()
    b = m.blocks[-1]
    cache.chunk(sid, b.file, 0, (split[1] / b.file).read_bytes())
    cache.end_file(sid, b.file, b.sha256)
    assert load_manifest(cache.commit(sid)) == m


def test_a_full_disk_is_refused_up_front_with_a_clear_error(split, tmp_path, monkeypatch):
    cache = ShardCache(tmp_path / "c")
    monkeypatch.setattr(disk_budget.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(NoSpace, match="Not enough disk space"):
        _begin(cache, split[1])
    with pytest.raises(ShardError, match="Not enough disk space"):
        _ship(Link(cache), split[1])


def test_malformed_requests_get_error_replies(split, tmp_path):
    cache = ShardCache(tmp_path / "c")
    sid, mdict = _begin(cache, split[1])
    cases = [
        ("ship_begin", {"seq": 1, "split_id": sid}, []),  # no manifest
        ("ship_begin", {"seq": 2, "split_id": sid, "manifest": {"blocks": 3}}, []),
        ("ship_chunk", {"seq": 3, "split_id": sid, "file": "L000.attn.safetensors",
                        "offset": -1}, [torch.zeros(4, dtype=torch.uint8)]),
        ("ship_chunk", {"seq": 4, "split_id": sid, "file": "L000.attn.safetensors",
                        "offset": 0}, []),  # no data frame
        ("ship_chunk", {"seq": 5, "split_id": sid, "file": "L000.attn.safetensors",
                        "offset": 0}, [torch.zeros(4, dtype=torch.float32)]),
        ("ship_commit", {"seq": 6, "split_id": sid, "extra": 1}, []),
        ("ship_commit", {"seq": "7", "split_id": sid}, []),
    ]
    for op, meta, tensors in cases:
        rop, rmeta = serve_shipping(cache, decode(encode(op, meta, tensors), REQUEST_OPS))
        assert rop == "ship_error" and rmeta["code"] == "bad_request", (op, meta)
        assert rmeta["seq"] == (meta["seq"] if isinstance(meta["seq"], int) else -1)
