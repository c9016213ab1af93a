"""The allreduce methods bench_collectives.py times, each run inside every rank process.

One set of spawned processes per world size runs every method in turn, `repeats` times
in rotated order, so all methods see the same machine load. Rank 0 hands each method's
endpoint (port, ZeroMQ endpoints) to the workers through per-rank queues.

- star / star_zmq / ring: our CommGroup (star on the loopback TCP fast path, star forced
  onto ZeroMQ, ring on ZeroMQ);
- gloo: torch.distributed all_reduce;
- tcp_star: a plain `socket` star (TCP_NODELAY, preallocated recv_into): the floor for
  any star written in Python;
- zmq_pingpong (2 ranks only): a raw ZeroMQ PAIR round trip of the same payload;
- paired: star and tcp_star open together, calls interleaved one by one: the ratio of
  their medians (the issue's target), robust to the load changing between methods.
"""

from __future__ import annotations

import socket
import statistics
import time

HIDDEN = (576, 2048, 8192)
METHODS = ("star", "star_zmq", "ring", "gloo", "tcp_star", "zmq_pingpong", "paired")


def _time_loop(fn, iters: int, warmup: int) -> float:
    """Median microseconds of one fn() call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def _share(rank: int, qs, make_value):
    """Rank 0 computes a value and hands it to every worker; workers get it."""
    if rank == 0:
        v = make_value()
        for q in qs[1:]:
            q.put(v)
        return v
    return qs[rank].get()


def _barrier(rank: int, ws: int, qs) -> None:
    """Nobody closes before every rank got its last message.

    Closing a ZeroMQ socket with linger 0 drops what it has not sent yet, and in a ring
    a worker finishes while its last chunk may still be on its way to the next rank.
    Workers report done on qs[0]; rank 0 answers each once all are done.
    """
    if rank == 0:
        for _ in range(ws - 1):
            qs[0].get(timeout=120)
        for q in qs[1:]:
            q.put("close")
    else:
        qs[0].put(rank)
        if qs[rank].get(timeout=120) != "close":
            raise RuntimeError("benchmark ranks out of step")


def _group(algo: str, transport: str, rank: int, ws: int, qs):
    from core.comm.group import CommGroup
    if rank == 0:
        g = CommGroup.master(ws, algorithm=algo, transport=transport)
        _share(0, qs, lambda: g.endpoints)
        g.wait_ready(60)
    else:
        g = CommGroup.worker(rank, ws, _share(rank, qs, None))
    want = list(range(1, ws)) if transport == "auto" else []
    if rank == 0 and g.local_links != want:
        raise RuntimeError(f"expected fast links to {want}, got {g.local_links}")
    return g


def _ours(algo: str, transport: str, rank: int, ws: int, qs, iters: int,
          warmup: int) -> dict[int, float]:
    import torch
    g = _group(algo, transport, rank, ws, qs)
    out = {}
    for d in HIDDEN:
        t = torch.zeros(1, d)  # zeros: repeated sums never overflow
        out[d] = _time_loop(lambda t=t: g.allreduce_(t), iters, warmup)
    _barrier(rank, ws, qs)
    g.close()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo(rank: int, ws: int, qs, iters: int, warmup: int) -> dict[int, float]:
    import torch
    import torch.distributed as dist
    port = _share(rank, qs, _free_port)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=ws)
    out = {}
    for d in HIDDEN:
        t = torch.zeros(1, d)
        out[d] = _time_loop(lambda t=t: dist.all_reduce(t), iters, warmup)
    _barrier(rank, ws, qs)
    dist.destroy_process_group()
    return out


def _recv_exact(s: socket.socket, view: memoryview) -> None:
    got, n = 0, view.nbytes
    while got < n:
        k = s.recv_into(view[got:], n - got)
        if not k:
            raise ConnectionError("peer closed")
        got += k


def _tcp_connect(rank: int, ws: int, qs) -> list[socket.socket]:
    """Rank 0: its sockets to ranks 1..ws-1 in order; a worker: its one socket to rank 0."""
    if rank != 0:
        c = socket.create_connection(("127.0.0.1", _share(rank, qs, None)))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(bytes([rank]))
        return [c]
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(ws)
        _share(0, qs, lambda: srv.getsockname()[1])
        conns = {}
        for _ in range(ws - 1):
            c, _ = srv.accept()
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns[int.from_bytes(c.recv(1), "little")] = c
    return [conns[r] for r in range(1, ws)]


def _tcp_step(rank: int, ws: int, socks: list[socket.socket], d: int):
    """One raw-socket star allreduce of a [1, d] float32 tensor, as a callable."""
    import torch
    t = torch.zeros(1, d)
    view = memoryview(t.view(-1).view(torch.uint8).numpy())
    if rank == 0:
        scratch = torch.empty(ws - 1, d)
        sviews = [memoryview(scratch[i].view(torch.uint8).numpy()) for i in range(ws - 1)]

        def step():
            for pc, sv in zip(socks, sviews, strict=True):
                _recv_exact(pc, sv)
            for i in range(ws - 1):
                t.view(-1).add_(scratch[i])
            for pc in socks:
                pc.sendall(view)
        return step

    def step():
        socks[0].sendall(view)
        _recv_exact(socks[0], view)
    return step


def _tcp_star(rank: int, ws: int, qs, iters: int, warmup: int) -> dict[int, float]:
    socks = _tcp_connect(rank, ws, qs)
    out = {d: _time_loop(_tcp_step(rank, ws, socks, d), iters, warmup) for d in HIDDEN}
    _barrier(rank, ws, qs)
    for s in socks:
        s.close()
    return out


def _paired(rank: int, ws: int, qs, iters: int, warmup: int) -> dict[int, float]:
    """star / tcp_star with both open at once and calls interleaved one by one (ABBA...),
    so both see the same moment of the machine: {hidden: ratio of the median times}."""
    import torch
    g = _group("star", "auto", rank, ws, qs)
    socks = _tcp_connect(rank, ws, qs)
    out = {}
    for d in HIDDEN:
        t = torch.zeros(1, d)
        ours, raw = (lambda t=t: g.allreduce_(t)), _tcp_step(rank, ws, socks, d)
        for _ in range(warmup):
            ours()
            raw()
        times: dict[object, list[float]] = {ours: [], raw: []}
        for i in range(iters):
            for fn in ((ours, raw) if i % 2 == 0 else (raw, ours)):
                t0 = time.perf_counter()
                fn()
                times[fn].append(time.perf_counter() - t0)
        out[d] = statistics.median(times[ours]) / statistics.median(times[raw])
    _barrier(rank, ws, qs)
    for s in socks:
        s.close()
    g.close()
    return out


def _zmq_pingpong(rank: int, ws: int, qs, iters: int, warmup: int) -> dict[int, float]:
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.linger = 0
    if rank == 0:
        _share(0, qs, lambda: s.bind_to_random_port("tcp://127.0.0.1"))
    else:
        s.connect(f"tcp://127.0.0.1:{_share(rank, qs, None)}")
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
    _barrier(rank, ws, qs)
    s.close()
    ctx.term()
    return out


def run_method(method: str, rank: int, ws: int, qs, iters: int,
               warmup: int) -> dict[int, float]:
    """Median us per call of `method` for every hidden size (as seen by this rank)."""
    if method == "star":
        return _ours("star", "auto", rank, ws, qs, iters, warmup)
    if method == "star_zmq":
        return _ours("star", "zmq", rank, ws, qs, iters, warmup)
    if method == "ring":
        return _ours("ring", "zmq", rank, ws, qs, iters, warmup)
    if method == "gloo":
        return _gloo(rank, ws, qs, iters, warmup)
    if method == "tcp_star":
        return _tcp_star(rank, ws, qs, iters, warmup)
    if method == "zmq_pingpong":
        return _zmq_pingpong(rank, ws, qs, iters, warmup)
    if method == "paired":
        return _paired(rank, ws, qs, iters, warmup)
    raise ValueError(f"unknown method {method!r}")


def methods_for(ws: int, methods: list[str]) -> list[str]:
    """The ping-pong is a two-party reference: only at 2 ranks."""
    return [m for m in methods if m != "zmq_pingpong" or ws == 2]


def rank_main(rank: int, ws: int, methods: list[str], repeats: int, qs, result_q,
              iters: int, warmup: int) -> None:
    """Spawned per rank: every method `repeats` times, rotated; rank 0 reports."""
    import torch
    torch.set_num_threads(1)
    todo = methods_for(ws, methods)
    res: dict[str, list[dict[int, float]]] = {m: [] for m in todo}
    try:
        for rep in range(repeats):
            k = rep % len(todo)
            for m in todo[k:] + todo[:k]:
                res[m].append(run_method(m, rank, ws, qs, iters, warmup))
    except Exception as e:  # report, do not hang the parent
        if rank == 0:
            result_q.put({"error": f"{type(e).__name__}: {e}"})
        raise
    if rank == 0:
        result_q.put(res)
