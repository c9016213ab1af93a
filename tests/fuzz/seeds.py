"""Real messages of every kind, made by the real encoders: what the mutations start from.

Grouped by who receives them: the worker daemon's control port, the master's side of
that port, rank 0's control port, a worker rank's control socket, and the data plane.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from core.comm import fastlink, wire
from core.comm.codec import encode
from tests.fuzz.mutations import Seed

SPLIT = "fuzz-split-rank1"
TOKEN = "0123456789abcdef0123456789abcdef"
HIDDEN = 64  # the fake runtime's hidden size (seeds' step tensors match it)


def _seed(name: str, op: str, meta: dict, tensors=()) -> Seed:
    return Seed(name, tuple(bytes(f) for f in encode(op, meta, list(tensors))))


def manifest(rank_dir: Path | None = None) -> dict:
    """A real manifest.json (from a tiny split) when given, else a small one by hand."""
    if rank_dir is not None:
        return json.loads((Path(rank_dir) / "manifest.json").read_text())
    return {"format": 1, "rank": 1, "blocks": [{"name": "layer0.attn", "file": "a.bin",
                                                "bytes": 16, "sha256": "0" * 64}]}


def worker_requests(man: dict | None = None) -> list[Seed]:
    """What a paired master sends to `tpi-chat worker`'s control port (no unpair: the
    fuzzer would unpair itself)."""
    data = torch.arange(256, dtype=torch.uint8)
    return [
        _seed("ping", "ping", {"t": 1.5}),
        _seed("info", "info", {}),
        _seed("run_rank", "run_rank", {"split_id": SPLIT, "rank": 1,
                                       "control": "tcp://127.0.0.1:1"}),
        _seed("stop_rank", "stop_rank", {"rank": 1}),
        _seed("ship_begin", "ship_begin", {"seq": 1, "split_id": SPLIT,
                                           "manifest": man or manifest()}),
        _seed("ship_chunk", "ship_chunk", {"seq": 2, "split_id": SPLIT, "file": "a.bin",
                                           "offset": 0}, [data]),
        _seed("ship_end_file", "ship_end_file", {"seq": 3, "split_id": SPLIT, "file": "a.bin",
                                                 "sha256": "ab" * 32}),
        _seed("ship_commit", "ship_commit", {"seq": 4, "split_id": SPLIT}),
    ]


def master_replies() -> list[Seed]:
    """What a worker answers the master (WorkerLink, ship_sender)."""
    return [
        _seed("pong", "pong", {"t": 1.5, "ranks": {"1": -1}, "why": {"2": "died"}}),
        _seed("info", "info", {"txt": {"name": "w", "v": "1"}}),
        _seed("rank_started", "rank_started", {"rank": 1}),
        _seed("refused", "refused", {"message": "no"}),
        _seed("ship_have", "ship_have", {"seq": 1, "split_id": SPLIT, "files": {
            "a.bin": {"have_bytes": 0, "complete": False}}}),
        _seed("ship_ack", "ship_ack", {"seq": 2, "file": "a.bin", "size": 256}),
        _seed("ship_file_ok", "ship_file_ok", {"seq": 3, "file": "a.bin"}),
        _seed("ship_committed", "ship_committed", {"seq": 4, "split_id": SPLIT}),
        _seed("ship_error", "ship_error", {"seq": 5, "code": "io", "message": "disk",
                                           "file": None}),
    ]


STATS = {"rank": 1, "pid": 4242, "rss_mb": 210.5, "peak_rss_mb": 230.0,
         "resident_blocks": 4, "resident_bytes": 1 << 20, "budget_blocks": 4,
         "total_blocks": 4, "total_bytes": 1 << 20, "loads": 4, "bytes_read": 1 << 20,
         "stall_s": 0.01, "kv_heads": 2, "mlp_cols": 96, "threads": 1}


def rank_control() -> list[Seed]:
    """Rank 0's control port hears these from its worker ranks."""
    return [
        _seed("hello", "hello", {"rank": 1, "pid": 4242}),
        _seed("ready", "ready", STATS),
        _seed("stats", "stats", STATS),
        _seed("error", "error", {"message": "rank 1: a shard is damaged"}),
    ]


SETUP = {"rank_dir": "/tmp/nowhere", "window": None, "prefetch": None, "context": 64,
         "threads": 1, "world_size": 2, "link": {"delay_ms": 1.0, "bandwidth_mbps": None},
         "endpoints": {"protocol": 1, "world_size": 2, "token": TOKEN,
                       "star": "tcp://127.0.0.1:5555", "ring0": "tcp://127.0.0.1:5556"}}


def rank_setup() -> list[Seed]:
    """A worker rank hears its setup from rank 0."""
    return [_seed("setup", "setup", SETUP)]


def _plane(name: str, kind: wire.Kind, op: str, meta: dict, tensors=()) -> Seed:
    frames = (wire.pack(kind), *(bytes(f) for f in encode(op, meta, list(tensors))))
    return Seed(name, frames, header=1)


def data_plane() -> list[Seed]:
    """Data-plane set-up and step messages (wire header frame + codec message)."""
    return [
        _plane("hello", wire.Kind.HELLO, "hello", {
            "rank": 1, "world_size": 2, "token": TOKEN, "ring": "tcp://127.0.0.1:5557",
            "pid": 4242, "fast": False}),
        _plane("welcome", wire.Kind.WELCOME, "welcome", {
            "ring": ["tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557"], "algorithm": "star",
            "wire_ring": True}),
        _plane("ring_hello", wire.Kind.RING_HELLO, "ring_hello", {"rank": 0, "token": TOKEN}),
        _plane("step", wire.Kind.STEP, "step", {"op": "step", "pos": 3},
               [torch.randn(2, HIDDEN)]),
        _plane("stop", wire.Kind.STEP, "step", {"op": "stop"}),
        Seed("ready", (wire.pack(wire.Kind.READY),), header=-1),
        Seed("fast_hello", (wire.pack(wire.Kind.FAST_HELLO, 1, 32)
                            + fastlink.hello_mac(TOKEN, 1),), header=-1),
    ]


def pairing_requests() -> list[Seed]:
    """What a master (or anyone) sends a worker's pairing port: one msgpack frame each,
    without its 4-byte length (the target frames them); the `raw:` ones are whole wire
    bytes, prefixes included, so mutations reach the framing too."""
    from core.cluster import pairing_code
    from core.cluster.pairing_wire import pack

    hello = pack("hello", {"name": "fuzz-master",
                           "pake": pairing_code.master_pake("123456").start()})
    info = pack("info")
    confirm = pack("confirm", {"mac": b"\0" * 32, "public_key": "k" * 40})
    return [
        Seed("info", (info[4:],)),
        Seed("hello", (hello[4:],)),
        Seed("confirm", (confirm[4:],)),
        Seed("info+hello", (info[4:], hello[4:])),
        Seed("hello+confirm", (hello[4:], confirm[4:])),
        Seed("raw:info+hello", (info + hello,), header=-1),
    ]
