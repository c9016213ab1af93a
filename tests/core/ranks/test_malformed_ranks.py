"""Malformed messages inside a real local 2-rank run (issue 13, item 4): each once stopped
the process or thread that received it. Rank 0 in this process, rank 1 a real
`tpi-chat rank` process, every socket CurveZMQ; the attacker is a peer with a key the
cluster admits (a paired-but-malicious device), on real sockets.

- rank 0's control listener (stats and errors): a TypeError killed it silently;
- rank 0's start-up handshake: a hello with a non-integer rank raised ValueError;
- a worker rank's step loop: a bad step (no pos, wrong shape, a codec-level bad frame)
  crashed the rank process;
- a worker rank's start-up: a setup with missing or mistyped fields gave a traceback and
  no `error` answer;
- rank 0's data-plane hello: a header with mixed key types raised TypeError out of
  wait_ready.
"""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import threading
import time
from pathlib import Path

import msgpack
import pytest
import torch
import zmq

from core.comm import wire
from core.comm.codec import encode
from core.comm.control import ControlServer
from core.comm.curve import CurveClientConfig, CurveServerConfig, Keys, make_curve_client
from core.comm.group import CommGroup
from core.engine.options import RunOptions
from core.ranks.local_cluster import LocalCluster
from core.ranks.rank_host import LocalRankHost, rank_command
from core.ranks.rank_process import CONTROL_OPS, RankSecrets
from tests.fixtures.tiny_models import make_tiny_model

ROOT = Path(__file__).resolve().parents[3]
BYTES_KEY = msgpack.packb({"v": 1, "op": "stats", "meta": {}, "tensors": [], "zz": 1,
                           b"x": 1}, use_bin_type=True)


def _header(op: str, meta: dict, tensors: list | None = None) -> bytes:
    return msgpack.packb({"v": 1, "op": op, "meta": meta, "tensors": tensors or []},
                         use_bin_type=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("llama"), "llama", num_hidden_layers=2)


@pytest.fixture(scope="module")
def attacker():
    return Keys.generate()


@pytest.fixture(scope="module")
def cluster(tiny, attacker):
    server = Keys.generate()
    c = LocalCluster(tiny, RunOptions(ranks=2, context=64, threads=1),
                     curve=CurveServerConfig(server, lambda k: k == attacker.public_key)
                     ).start()
    c.server_key = server.public_key
    yield c
    c.close()


def _dealer(ctx: zmq.Context, keys: Keys, server_key: str, endpoint: str) -> zmq.Socket:
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    make_curve_client(s, keys, server_key)
    s.connect(endpoint)
    return s


def test_control_listener_survives_malformed_and_stranger_messages(cluster, attacker):
    ctx = zmq.Context()
    try:
        s = _dealer(ctx, attacker, cluster.server_key, cluster.control.endpoint)
        for frames in ([BYTES_KEY],  # TypeError in the codec
                       [_header("stats", {})],  # RankStats(**{}) -> TypeError
                       [_header("stats", {"rank": 1, "rss_mb": "x"})],
                       [_header("error", {"message": "x" * 10000})]):  # not one of ours
            s.send_multipart(frames)
        time.sleep(1.0)  # the listener polls every 0.2 s
        s.close()
    finally:
        ctx.destroy(linger=0)
    assert cluster._listener.is_alive()
    assert 1 not in cluster._errors  # a stranger's "error" is nobody's
    before = cluster._stats[1]
    cluster.refresh_stats(timeout=10)
    assert cluster._stats[1] is not before  # the real rank's stats still arrive
    assert cluster._stats[1].rank == 1


def _bad_steps(group: CommGroup) -> list:
    """(description, send) pairs: each sends one bad step to rank 1 as rank 0 would."""
    p = group._p
    D = 64  # hidden size of the tiny model
    good = torch.zeros(3, D)

    def meta_step(meta, x):
        return lambda: group.broadcast_step(meta, x)

    def raw(frames):
        def send():
            p.star.send_multipart([p.ident_of[1], wire.pack(wire.Kind.STEP), *frames])
        return send

    return [
        ("no position", meta_step({"op": "step"}, good)),
        ("negative position", meta_step({"op": "step", "pos": -3}, good)),
        ("position past the context", meta_step({"op": "step", "pos": 10**12}, good)),
        ("wrong hidden size", meta_step({"op": "step", "pos": 0}, torch.zeros(3, 7))),
        ("int64 hidden states", meta_step({"op": "step", "pos": 0},
                                          torch.zeros(3, D, dtype=torch.int64))),
        ("no hidden states", meta_step({"op": "step", "pos": 0}, None)),
        ("bytes key beside str key", raw([msgpack.packb(
            {"v": 1, "op": "step", "meta": {}, "tensors": [], "zz": 1, b"x": 1},
            use_bin_type=True)])),
        ("shape [0, 2**64-1]", raw([_header("step", {"pos": 0}, [
            {"dtype": "float32", "shape": [0, 2**64 - 1]}]), b""])),
        ("a RESULT header where a step belongs", lambda: p.star.send_multipart(
            [p.ident_of[1], wire.pack(wire.Kind.RESULT, 5, 4), b"\x00" * 4])),
    ]


def test_worker_rank_drops_bad_steps_and_keeps_serving(cluster, tiny):
    ids = [5, 6, 7]
    before = cluster.step(ids, 0)
    for name, send in _bad_steps(cluster.group):
        cluster._errors.clear()
        cluster._error_seen.clear()
        with cluster._lock:
            send()
        assert cluster._error_seen.wait(10), f"{name}: rank 1 said nothing"
        assert "bad step" in cluster._errors[1], (name, cluster._errors)
        assert cluster.hosts[0].exit_reason() is None, f"{name}: rank 1 stopped"
        cluster._errors.clear()
        after = cluster.step(ids, 0)
        assert torch.equal(before, after), name


class _NoisyHost(LocalRankHost):
    """A real local rank, started after a peer with an admitted key says nonsense on
    the control port: hello with rank "1", a second hello, an error, a bad ready."""

    def __init__(self, logs, keys, server_key, attacker):
        super().__init__(logs, keys, server_key, 1)
        self.attacker = attacker

    def start(self, rank, control, rank_dir, report):
        ctx = zmq.Context()
        try:
            s = _dealer(ctx, self.attacker, self.server_key, control)
            for frames in ([_header("hello", {"rank": "1"})], [BYTES_KEY],
                           [_header("hello", {"rank": [1]})],
                           [_header("error", {"message": "stop everything"})],
                           [_header("ready", {"rank": 1})]):
                s.send_multipart(frames)
            time.sleep(0.3)
            s.close()
        finally:
            ctx.destroy(linger=0)
        super().start(rank, control, rank_dir, report)


def test_start_up_ignores_hellos_and_words_from_a_non_rank(tiny, attacker, tmp_path):
    server = Keys.generate()
    keys = Keys.generate()
    host = _NoisyHost(tmp_path, keys, server.public_key, attacker)
    admitted = {attacker.public_key, keys.public_key}
    c = LocalCluster(tiny, RunOptions(ranks=2, context=64, threads=1), hosts=[host],
                     curve=CurveServerConfig(server, admitted.__contains__))
    try:
        c.start()
        assert c.step([1, 2], 0).shape[-1] > 0
    finally:
        c.close()


# --- a worker rank's start-up ----------------------------------------------------------

_RING = Keys.generate()
BAD_SETUPS = {
    "empty": {},
    "threads not a number": {"threads": "x", "world_size": 2, "endpoints": {},
                             "rank_dir": "/x", "context": 64},
    "world of one": {"threads": 1, "world_size": 1, "endpoints": {}, "rank_dir": "/x",
                     "context": 64},
    "link with unknown fields": {"threads": 1, "world_size": 2, "endpoints": {},
                                 "rank_dir": "/x", "context": 64, "link": {"evil": 1}},
    "endpoint libzmq cannot parse": {
        "threads": 1, "world_size": 2, "rank_dir": "/x", "context": 64,
        "endpoints": {"protocol": 1, "world_size": 2, "token": "t", "star": "tcp://[::1",
                      "ring_curve": {"public": _RING.public_key, "secret": _RING.secret_key}}},
}


def _run_rank_against(setup_frames: list) -> tuple[int, str, str | None]:
    """A real `tpi-chat rank` (CURVE keys on stdin) answered with `setup_frames`; its exit
    code, its stderr and the `error` message it sent back (None if none)."""
    server, keys = Keys.generate(), Keys.generate()
    ctl = ControlServer("127.0.0.1", ops=CONTROL_OPS,
                        curve=CurveServerConfig(server, lambda k: k == keys.public_key))
    proc = subprocess.Popen(rank_command(ctl.endpoint, 1, curve_stdin=True), cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(RankSecrets(CurveClientConfig(keys, server.public_key)).to_json())
        proc.stdin.close()
        got = ctl.recv(timeout=60)
        assert got is not None, "the rank never said hello"
        ident, hello = got
        assert hello.op == "hello"
        ctl.sock.send_multipart([ident, *setup_frames])
        error = None
        deadline = time.monotonic() + 30
        while error is None and proc.poll() is None and time.monotonic() < deadline:
            got = ctl.recv(timeout=0.5)
            if got is not None and got[1].op == "error":
                error = got[1].meta.get("message")
        code = proc.wait(timeout=30)
        return code, proc.stderr.read(), error
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctl.close()


@pytest.mark.parametrize("name", list(BAD_SETUPS) + ["bytes key beside str key"])
def test_worker_rank_answers_a_bad_setup_with_an_error(name):
    frames = ([BYTES_KEY.replace(b"stats", b"setup")] if name not in BAD_SETUPS
              else encode("setup", BAD_SETUPS[name]))
    code, stderr, error = _run_rank_against(frames)
    assert code == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert error, stderr
    assert len(error) <= 500


# --- rank 0's data-plane hello ---------------------------------------------------------

def _join(rank: int, endpoints: dict, keys: Keys, server_key: str, out) -> None:
    g = CommGroup.worker(rank, 2, endpoints, curve=CurveClientConfig(keys, server_key),
                         join_timeout=60)
    try:
        t = torch.ones(4)
        g.allreduce_(t)
        out.put(t.tolist())
    finally:
        g.close()


def test_data_plane_hello_refuses_malformed_and_the_real_rank_joins(attacker):
    server, keys = Keys.generate(), Keys.generate()
    admitted = {attacker.public_key, keys.public_key}
    g = CommGroup.master(2, curve=CurveServerConfig(server, admitted.__contains__))
    ctx = zmq.Context()
    proc = None
    failed: list[BaseException] = []

    def wait() -> None:
        try:
            g.wait_ready(60)
        except BaseException as e:  # noqa: B036 - handed to the test thread
            failed.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()  # rank 0 reads hellos while it waits for its ranks
    try:
        s = _dealer(ctx, attacker, server.public_key, g.endpoints["star"])
        hello = wire.pack(wire.Kind.HELLO)
        token = g.endpoints["token"]
        for frames in (
            [hello, msgpack.packb({"v": 1, "op": "hello", "meta": {}, "tensors": [],
                                   "zz": 1, b"x": 1}, use_bin_type=True)],
            [hello, _header("hello", {}, [{"dtype": "uint8", "shape": [0, 2**64 - 1]}]),
             b""],
            [hello, *encode("hello", {"rank": 1, "world_size": 2, "token": token,
                                      "ring": "tcp://[::1", "pid": 1})],
            # hmac.compare_digest raises TypeError on a non-ASCII str
            [hello, *encode("hello", {"rank": 1, "world_size": 2, "token": "é" * 32,
                                      "ring": "tcp://127.0.0.1:9", "pid": 1})],
            # what a peer sent is quoted short (make fuzz found a long world_size quoted
            # whole in the refusal)
            [hello, *encode("hello", {"rank": 1, "world_size": "s" * 5000, "token": token,
                                      "ring": "tcp://127.0.0.1:9", "pid": 1})],
        ):
            s.send_multipart(frames)
        refusals = []
        while s.poll(2000) and len(refusals) < 5:
            refusals.append(s.recv_multipart())
        assert len(refusals) == 5
        assert all(wire.peek_kind(r[0]) == wire.Kind.REFUSE for r in refusals)
        assert b"session token" in refusals[3][1], refusals[3]
        assert b"expects" in refusals[4][1] and len(refusals[4][1]) < 300
        out = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(
            target=_join, args=(1, g.endpoints, keys, server.public_key, out), daemon=True)
        proc.start()
        waiter.join(70)
        assert not failed, failed
        t = torch.full((4,), 2.0)
        g.allreduce_(t)
        assert t.tolist() == [3.0] * 4 and out.get(timeout=30) == [3.0] * 4
    finally:
        ctx.destroy(linger=0)
        g.close()
        waiter.join(10)
        if proc is not None:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
