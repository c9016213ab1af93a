"""A paired master turned hostile, against a real `tpi-chat worker`'s shard cache: it
must not replace another master's shard, promise itself the same free space eight times,
grow past its quota, hold a file descriptor per file it touches, or leave unfinished
ships on the disk forever (docs/SECURITY.md, "Disk and shards")."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import torch

from core.cluster.shard_store import owner_folder
from core.comm.codec import encode
from tests.fixtures.paired_worker import PairedWorker

KB = 1024
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    """A real rank manifest (the blocks get replaced by each test's own files)."""
    from core.model.config import load_config
    from core.shard.plan import make_plan
    from core.shard.splitter import split_model
    from tests.fixtures.tiny_models import make_tiny_model

    base = tmp_path_factory.mktemp("tpl")
    model = make_tiny_model(base / "model")
    plan = make_plan(load_config(model), world_size=2)
    rank = split_model(model, plan, base / "out").rank_dirs[1]
    return json.loads((rank / "manifest.json").read_text())


def _files(*datas: bytes) -> dict[str, bytes]:
    """Block files named as a manifest requires (L000.attn.safetensors, ...)."""
    return {f"L{i:03d}.attn.safetensors": d for i, d in enumerate(datas)}


def _manifest(template: dict, files: dict[str, bytes]) -> dict:
    blocks = [{"name": f.removesuffix(".safetensors"), "file": f, "bytes": len(d),
               "sha256": hashlib.sha256(d).hexdigest(), "tensors": {}}
              for f, d in files.items()]
    return {**template, "blocks": blocks}


class Master:
    """Raw ship_* requests over one CURVE connection, as one paired master."""

    def __init__(self, worker: PairedWorker, identity=None):
        self.w = worker
        self.sock = worker.connect(master=identity)
        self.seq = 0

    def ask(self, op: str, meta: dict, tensors=()):
        self.seq += 1
        msg = self.w.request(self.sock, encode(op, {"seq": self.seq, **meta}, list(tensors)))
        assert msg is not None, f"no answer to {op}; the worker said {self.w.proc.lines[-5:]}"
        return msg

    def ship(self, split_id: str, manifest: dict, files: dict[str, bytes]) -> list[str]:
        """begin, every file in one chunk, commit; the ops answered."""
        ops = [self.ask("ship_begin", {"split_id": split_id, "manifest": manifest}).op]
        for f, d in files.items():
            data = _tensor(d)
            ops.append(self.ask("ship_chunk", {"split_id": split_id, "file": f, "offset": 0},
                                [data]).op)
            ops.append(self.ask("ship_end_file", {"split_id": split_id, "file": f,
                                                  "sha256": hashlib.sha256(d).hexdigest()}).op)
        ops.append(self.ask("ship_commit", {"split_id": split_id}).op)
        return ops

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = PairedWorker(tmp_path_factory.mktemp("shards") / "w")
    yield w
    w.stop()


@pytest.fixture(scope="module")
def small_worker(tmp_path_factory):
    """Quota 100 KB per master; each test ships as masters of its own."""
    w = PairedWorker(tmp_path_factory.mktemp("quota") / "w", args=("--shard-quota", "100KB"))
    yield w
    w.stop()


def _folder(w: PairedWorker, master) -> Path:
    return w.data_dir / "shards" / owner_folder(master.public_key)


def test_a_second_master_cannot_replace_the_first_ones_shard(worker, template):
    alice_id, mallory_id = worker.add_master("alice"), worker.add_master("mallory")
    alice, mallory = Master(worker, alice_id), Master(worker, mallory_id)
    mine = _files(b"alice's weights " * 64)
    assert alice.ship("s1", _manifest(template, mine), mine)[-1] == "ship_committed"
    theirs = _files(b"mallory's weights" * 64)
    assert mallory.ship("s1", _manifest(template, theirs), theirs)[-1] == "ship_committed"
    # Alice's shard is intact: her begin finds every file complete, nothing to re-send.
    have = alice.ask("ship_begin", {"split_id": "s1", "manifest": _manifest(template, mine)})
    assert have.op == "ship_have"
    (f, data), = mine.items()
    assert have.meta["files"][f] == {"have_bytes": len(data), "complete": True}
    assert (_folder(worker, alice_id) / "s1" / f).read_bytes() == data
    alice.close()
    mallory.close()


def test_concurrent_ships_cannot_claim_the_same_space_or_pass_the_quota(small_worker,
                                                                          template):
    """Quota 100 KB: eight ships of 30 KB begun together get three claims, not eight;
    another master has a quota of its own; what lands on disk stays within it."""
    w = small_worker
    files = _files(os.urandom(30 * KB))
    m = _manifest(template, files)
    alice_id = w.add_master("alice")
    alice = Master(w, alice_id)
    answers = [alice.ask("ship_begin", {"split_id": f"s{i}", "manifest": m}) for i in range(8)]
    assert [a.op for a in answers] == ["ship_have"] * 3 + ["ship_error"] * 5
    assert answers[3].meta["code"] == "no_space"
    assert "--shard-quota" in answers[3].meta["message"]
    bob = Master(w, w.add_master("bob"))  # his own quota, untouched by Alice's claims
    assert bob.ask("ship_begin", {"split_id": "s0", "manifest": m}).op == "ship_have"
    for i in range(8):  # chunks of refused ships find no session
        for f, d in files.items():
            alice.ask("ship_chunk", {"split_id": f"s{i}", "file": f, "offset": 0}, [_tensor(d)])
    used = sum(p.stat().st_size for p in _folder(w, alice_id).rglob("*") if p.is_file())
    assert used <= 100 * KB, used
    alice.close()
    bob.close()


def test_old_shards_make_room_within_the_quota(small_worker, template):
    """A master that ships more models than its quota holds is not stuck: its least
    recently used committed shards are removed for the new one."""
    carol_id = small_worker.add_master("carol")
    carol = Master(small_worker, carol_id)
    for i in range(5):
        files = _files(os.urandom(30 * KB))
        assert carol.ship(f"s{i}", _manifest(template, files), files)[-1] == \
            "ship_committed", small_worker.proc.lines[-5:]
    assert sorted(p.name for p in _folder(small_worker, carol_id).iterdir()) == \
        ["s2", "s3", "s4"]
    carol.close()


def test_touching_many_files_does_not_hold_a_descriptor_each(worker, template):
    files = _files(*[b"xy"] * 400)
    dave = Master(worker, worker.add_master("dave"))
    assert dave.ask("ship_begin", {"split_id": "many",
                                   "manifest": _manifest(template, files)}).op == "ship_have"
    before = worker.usage().fds
    one = _tensor(b"x")
    for f in files:  # half of each file: every temp file stays unfinished
        assert dave.ask("ship_chunk", {"split_id": "many", "file": f, "offset": 0},
                        [one]).op == "ship_ack"
    grew = worker.usage().fds - before
    assert grew <= 10, f"{grew} more open files after touching 400 temp files"
    dave.close()


def test_unfinished_ships_and_the_old_layout_are_cleaned_at_start(tmp_path):
    data = tmp_path / "w"
    shards = data / "shards"
    mine = shards / owner_folder("some-master-key")
    old, fresh, legacy = mine / "old", mine / "fresh", shards / "flat-layout-split"
    for d in (old, fresh, legacy):
        d.mkdir(parents=True)
        (d / "a.bin.part").write_bytes(b"z" * 1000)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old / "a.bin.part", (two_days_ago, two_days_ago))
    w = PairedWorker(data)
    try:
        assert not old.exists() and not legacy.exists()
        assert (fresh / "a.bin.part").exists()  # still resumable
    finally:
        w.stop()


def _tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)
