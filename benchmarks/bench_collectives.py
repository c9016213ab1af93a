"""Allreduce latency on loopback: our star and ring vs torch.distributed gloo and raw references.

One process per rank (spawned), torch.set_num_threads(1) each, T=1 hidden vectors of
576, 2048 and 8192 floats. Reported: median latency (us) of one call as seen by rank 0.

References measured in the same run:
- zmq_pingpong: a raw ZeroMQ PAIR round trip of the same payload (2 ranks: the floor of
  any 2-hop zmq collective).
- tcp_star: plain `socket` star with TCP_NODELAY and preallocated recv_into, the same
  algorithm as our star without ZeroMQ: the target is star <= 1.5x tcp_star.

    .venv/bin/python benchmarks/bench_collectives.py [--iters 300] [--warmup 30]

Writes benchmarks/out/collectives.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HIDDEN = (576, 2048, 8192)
RANKS = (2, 3, 4)
METHODS = ("star", "ring", "gloo", "tcp_star", "zmq_pingpong")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _time_loop(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


# -- one function per method, run in every rank process --------------------------------

def _ours(algo: str, rank: int, ws: int, qs, iters: int, warmup: int) -> dict[int, float]:
    import torch

    from core.comm.group import CommGroup
    if rank == 0:
        g = CommGroup.master(ws, algorithm=algo)
        for q in qs[1:]:
            q.put(g.endpoints)
        g.wait_ready(60)
    else:
        g = CommGroup.worker(rank, ws, qs[rank].get())
    out = {}
    for d in HIDDEN:
        t = torch.zeros(1, d)  # zeros: repeated sums never overflow
        out[d] = _time_loop(lambda t=t: g.allreduce_(t), iters, warmup)
    g.close()
    return out


def _gloo(rank: int, ws: int, qs, iters: int, warmup: int) -> dict[int, float]:
    import torch
    import torch.distributed as dist
    if rank == 0:
        port = _free_port()
        for q in qs[1:]:
            q.put(port)
    else:
        port = qs[rank].get()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=ws)
    out = {}
    for d in HIDDEN:
        t = torch.zeros(1, d)  # zeros: repeated sums never overflow
        out[d] = _time_loop(lambda t=t: dist.all_reduce(t), iters, warmup)
    dist.destroy_process_group()
    return out


def _recv_exact(s: socket.socket, view: memoryview) -> None:
    got, n = 0, view.nbytes
    while got < n:
        k = s.recv_into(view[got:], n - got)
        if not k:
            raise ConnectionError("peer closed")
        got += k


def _tcp_star(rank: int, ws: int, qs, iters: int, warmup: int) -> dict[int, float]:
    import torch
    if rank == 0:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(ws)
        for q in qs[1:]:
            q.put(srv.getsockname()[1])
        conns = {}
        for _ in range(ws - 1):
            c, _ = srv.accept()
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns[int.from_bytes(c.recv(1), "little")] = c
        peers = [conns[r] for r in range(1, ws)]
    else:
        c = socket.create_connection(("127.0.0.1", qs[rank].get()))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(bytes([rank]))
    out = {}
    for d in HIDDEN:
        t = torch.zeros(1, d)  # zeros: repeated sums never overflow
        view = memoryview(t.view(-1).view(torch.uint8).numpy())
        if rank == 0:
            scratch = torch.empty(ws - 1, d)
            sviews = [memoryview(scratch[i].view(torch.uint8).numpy()) for i in range(ws - 1)]

            def step(t=t, view=view, scratch=scratch, sviews=sviews):
                for pc, sv in zip(peers, sviews, strict=True):
                    _recv_exact(pc, sv)
                for i in range(ws - 1):
                    t.view(-1).add_(scratch[i])
                for pc in peers:
                    pc.sendall(view)
        else:
            def step(view=view):
                c.sendall(view)
                _recv_exact(c, view)
        out[d] = _time_loop(step, iters, warmup)
    return out


def _zmq_pingpong(rank: int, ws: int, qs, iters: int, warmup: int) -> dict[int, float]:
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.linger = 0
    if rank == 0:
        port = s.bind_to_random_port("tcp://127.0.0.1")
        qs[1].put(port)
    else:
        s.connect(f"tcp://127.0.0.1:{qs[1].get()}")
    out = {}
    for d in HIDDEN:
        buf = bytearray(d * 4)
        if rank == 0:
            def step(buf=buf):
                s.send(buf)
                s.recv_into(buf)
        else:
            def step(buf=buf):
                s.recv_into(buf)
                s.send(buf)
        out[d] = _time_loop(step, iters, warmup)
    s.close()
    ctx.term()
    return out


def _rank_main(method: str, rank: int, ws: int, qs, result_q, iters: int, warmup: int) -> None:
    import torch
    torch.set_num_threads(1)
    try:
        if method in ("star", "ring"):
            res = _ours(method, rank, ws, qs, iters, warmup)
        elif method == "gloo":
            res = _gloo(rank, ws, qs, iters, warmup)
        elif method == "tcp_star":
            res = _tcp_star(rank, ws, qs, iters, warmup)
        else:
            res = _zmq_pingpong(rank, ws, qs, iters, warmup)
    except Exception as e:  # report, do not hang the parent
        if rank == 0:
            result_q.put({"error": f"{type(e).__name__}: {e}"})
        raise
    if rank == 0:
        result_q.put(res)


def run(method: str, ws: int, iters: int, warmup: int) -> dict[int, float] | dict[str, str]:
    ctx = mp.get_context("spawn")
    qs = [ctx.Queue() for _ in range(ws)]
    result_q = ctx.Queue()
    procs = [ctx.Process(target=_rank_main, args=(method, r, ws, qs, result_q, iters, warmup))
             for r in range(ws)]
    for p in procs:
        p.start()
    try:
        res = result_q.get(timeout=300)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--ranks", default=",".join(map(str, RANKS)))
    args = ap.parse_args()
    methods = args.methods.split(",")
    ranks = [int(r) for r in args.ranks.split(",")]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for m in methods:
        for ws in ranks:
            if m == "zmq_pingpong" and ws != 2:
                continue
            res = run(m, ws, args.iters, args.warmup)
            results.setdefault(m, {})[str(ws)] = {str(k): v for k, v in res.items()}
            print(f"{m} x{ws}: {res}", file=sys.stderr, flush=True)

    lines = ["| method | ranks | " + " | ".join(f"h={d} (us)" for d in HIDDEN) + " |",
             "|---|---|" + "---|" * len(HIDDEN)]
    for m, per in results.items():
        for ws, row in per.items():
            cells = [f"{row[str(d)]:.0f}" if str(d) in row else row.get("error", "?")
                     for d in HIDDEN]
            lines.append(f"| {m} | {ws} | " + " | ".join(cells) + " |")
    if "star" in results and "tcp_star" in results:
        lines += ["", "star / tcp_star:"]
        for ws, row in results["star"].items():
            ref = results["tcp_star"].get(ws, {})
            ratios = [f"h={d}: {row[str(d)] / ref[str(d)]:.2f}x" for d in HIDDEN
                      if str(d) in row and str(d) in ref]
            lines.append(f"- {ws} ranks: " + ", ".join(ratios))
    table = "\n".join(lines)
    print(table)
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "collectives.json").write_text(json.dumps({
        "unit": "median microseconds per allreduce (rank 0), T=1 float32",
        "iters": args.iters, "warmup": args.warmup, "cpus": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "results": results, "table": table,
    }, indent=2))


if __name__ == "__main__":
    main()
