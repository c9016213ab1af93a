"""Shard shipping over real ZeroMQ sockets on loopback, worker in another process.

The worker process binds a ControlServer (ROUTER) and runs serve_router over a ShardCache;
the master connects a ControlClient (DEALER) whose send/recv are handed to ship_rank as is.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from core.cluster.shard_cache import PART
from core.cluster.ship_messages import REPLY_OPS, REQUEST_OPS
from core.cluster.ship_sender import ShipProgress, ship_rank, split_id_for
from core.comm.codec import encode
from core.comm.control import ControlClient
from core.errors import PeerError
from core.shard.manifest import load_manifest, verify_block

pytestmark = pytest.mark.slow  # each test starts a worker process (imports torch)


def _worker_main(root: str, conn: Connection) -> None:
    """The worker: serve shipping on a fresh ROUTER until the parent says stop."""
    from core.cluster.shard_cache import ShardCache
    from core.cluster.ship_receiver import serve_router
    from core.comm.control import ControlServer

    with ControlServer("127.0.0.1", ops=REQUEST_OPS) as server:
        conn.send(server.endpoint)
        serve_router(server, ShardCache(Path(root)), conn.poll)


class Worker:
    def __init__(self, root: Path):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(str(root), child), daemon=True)
        self.proc.start()
        if not self.conn.poll(60):
            raise RuntimeError("the worker process did not start")
        self.endpoint: str = self.conn.recv()

    def stop(self) -> None:
        if self.proc.is_alive():
            self.conn.send("stop")
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from core.model.config import load_config
    from core.shard.plan import make_plan
    from core.shard.splitter import split_model
    from tests.fixtures.tiny_models import make_tiny_model

    base = tmp_path_factory.mktemp("shipwire")
    model = make_tiny_model(base / "model", seed=3)
    return split_model(model, make_plan(load_config(model), world_size=2), base / "out").rank_dirs


def _ship(endpoint: str, src: Path, progress=None, **kw):
    with ControlClient(endpoint, ops=REPLY_OPS) as client:
        return ship_rank(client.send, client.recv, src, split_id_for(src), progress, **kw)


def _tree(p: Path) -> list[str]:
    return sorted(str(x.relative_to(p)) for x in p.rglob("*"))


def test_ship_over_zmq_to_another_process_then_reship_sends_nothing(split, tmp_path):
    src = split[0]  # rank 0: the biggest files (embedding, head)
    root = tmp_path / "cache"
    w = Worker(root)
    try:
        events: list[ShipProgress] = []
        res = _ship(w.endpoint, src, events.append, chunk_size=16384)
        again = _ship(w.endpoint, src)
    finally:
        w.stop()
    m = load_manifest(src)
    got = root / split_id_for(src)
    assert load_manifest(got) == m
    for b in m.blocks:
        verify_block(got, b, full=True)
    assert res.bytes_sent == m.total_bytes and res.files_sent == len(m.blocks)
    assert events[-1].fraction == 1.0
    assert [e.bytes_done for e in events] == sorted(e.bytes_done for e in events)
    assert (again.bytes_sent, again.files_skipped) == (0, len(m.blocks))


def test_worker_killed_mid_transfer_then_a_new_worker_resumes(split, tmp_path):
    src = split[1]
    root = tmp_path / "cache"
    total = load_manifest(src).total_bytes
    w = Worker(root)
    killed = threading.Event()

    def kill_midway(e: ShipProgress) -> None:
        if e.bytes_done > total // 2 and not killed.is_set():
            w.proc.kill()  # the worker dies; the master must notice, not hang
            killed.set()

    try:
        with pytest.raises(PeerError, match="did not answer"):
            _ship(w.endpoint, src, kill_midway, chunk_size=2048, timeout=3.0)
    finally:
        w.stop()
    assert killed.is_set()
    sid = split_id_for(src)
    assert not (root / sid / "manifest.json").exists()

    w2 = Worker(root)
    try:
        res = _ship(w2.endpoint, src, chunk_size=2048)
    finally:
        w2.stop()
    assert 0 < res.bytes_sent < total // 2 + 8 * 2048
    assert not list((root / sid).glob("*" + PART))
    for b in load_manifest(root / sid).blocks:
        verify_block(root / sid, b, full=True)


def test_hostile_requests_leave_the_worker_up_and_writing_nothing(split, tmp_path):
    home = tmp_path / "home"
    root = home / "cache"
    root.mkdir(parents=True)
    w = Worker(root)
    mdict = load_manifest(split[1]).to_dict()
    try:
        with ControlClient(w.endpoint, ops=REPLY_OPS) as c:
            for i, name in enumerate(["../../x", "/etc/passwd", ".hidden", "a/b", "x\x00y",
                                      "z" * 300]):
                c.send("ship_begin", {"seq": i, "split_id": name, "manifest": mdict})
                rep = c.recv(10)
                assert rep is not None and rep.op == "ship_error", name
                assert rep.meta["code"] == "bad_request" and rep.meta["seq"] == i
            evil = {**mdict, "blocks": [{**mdict["blocks"][0], "name": "../../x",
                                         "file": "../../x"}]}
            c.send("ship_begin", {"seq": 50, "split_id": "ok-id", "manifest": evil})
            assert c.recv(10).meta["code"] == "bad_request"
            # Garbage frames the codec refuses: still an answer, not a dead worker.
            c.sock.send_multipart([b"\xc1not msgpack"])
            assert c.recv(10).meta["seq"] == -1
            c.sock.send_multipart(encode("rm_rf", {"path": "/"}))
            assert c.recv(10).meta["code"] == "bad_request"
        assert _tree(home) == ["cache"]  # nothing written, not even a folder
        assert w.proc.is_alive()
        res = _ship(w.endpoint, split[1])
        assert res.files_sent == len(mdict["blocks"])
    finally:
        w.stop()
    assert not (home.parent / "x").exists() and not (tmp_path.parent / "x").exists()


def _big_rank_dir(tmp_path: Path, split: list[Path], files: int, size: int) -> Path:
    """A rank dir of `files` random files of `size` bytes, with its manifest."""
    import json
    import os

    from core.shard.manifest import sha256_file

    src = tmp_path / "big-split" / "rank1"
    src.mkdir(parents=True)
    m = json.loads((split[1] / "manifest.json").read_text())
    blocks = m["blocks"][:files]
    for b in blocks:
        (src / b["file"]).write_bytes(os.urandom(size))
        b["bytes"], b["sha256"] = size, sha256_file(src / b["file"])
    m["blocks"] = blocks
    (src / "manifest.json").write_text(json.dumps(m))
    return src


def test_progress_from_another_process_carries_bytes_a_rate_and_time_left(tmp_path, split):
    """Acks from a real worker process: every event has bytes done of the total; after a
    second, a rate near the one the test measures itself and a time left near the time the
    rest really takes (the callback paces the ship at ~10 MB/s, so it lasts ~2 s)."""
    src = _big_rank_dir(tmp_path, split, 4, 4 << 20)
    total = 4 * (4 << 20)
    seen: list[tuple[float, ShipProgress]] = []

    def paced(e: ShipProgress) -> None:
        seen.append((time.monotonic(), e))
        time.sleep(0.025)  # 256 KiB per 25 ms: a ~10 MB/s link, whatever this box's load

    w = Worker(tmp_path / "cache")
    try:
        _ship(w.endpoint, src, paced, chunk_size=256 << 10)
    finally:
        w.stop()
    t_first, t_end = seen[0][0], seen[-1][0]
    assert t_end - t_first > 1.5
    assert all(e.bytes_total == total and 0 <= e.bytes_done <= total for _, e in seen)
    assert seen[-1][1].bytes_done == total
    assert all(e.rate_bps is None for t, e in seen if t - t_first < 0.9)
    later = [(t, e) for t, e in seen if t - t_first > 1.1 and e.bytes_done < total]
    assert len(later) > 10
    for t, e in later:
        back = [(u, f) for u, f in seen if u <= t]
        u0, f0 = back[0]
        measured = (e.bytes_done - f0.bytes_done) / (t - u0)
        assert e.rate_bps is not None and 0.5 * measured < e.rate_bps < 2 * measured
    t_mid, mid = later[len(later) // 2]
    assert mid.eta_s is not None and 0.5 * (t_end - t_mid) < mid.eta_s < 2 * (t_end - t_mid)


def test_throughput_over_loopback(tmp_path, split):
    """A rank dir of 4 x 16 MiB files: measured MB/s (printed with -s), sanity floor only."""
    src = _big_rank_dir(tmp_path, split, 4, 16 << 20)
    w = Worker(tmp_path / "cache")
    try:
        res = _ship(w.endpoint, src)
    finally:
        w.stop()
    print(f"\nshipped {res.bytes_sent / 1e6:.0f} MB in {res.seconds:.2f} s: "
          f"{res.mb_per_s:.0f} MB/s")
    assert res.bytes_sent == 4 * (16 << 20)
    assert res.mb_per_s > 5  # loopback on a loaded 2-core box; real numbers are far higher
