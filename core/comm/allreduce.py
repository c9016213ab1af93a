"""In-place SUM allreduce over the data plane: star (default) and ring.

Star: workers send their partial to rank 0, which adds them in rank order (so the
result is deterministic, bit for bit, whatever order they arrive in) and sends the sum
back. Workers on rank 0's machine use their raw loopback TCP link (fastlink.py), the
others the ZeroMQ star; rank 0 reads the fast links first, in rank order. Two hops,
2(N-1) messages: the latency-optimal choice for small hidden vectors.

Ring: reduce-scatter then all-gather in N-1 steps each, 2(N-1) hops of 1/N of the
tensor: better for big tensors on bandwidth-bound links, worse for latency.

The hot path is written for latency (a decode step makes 2 per layer): numpy views of
the tensor (cheaper than torch ops on tiny vectors), receives straight into
preallocated buffers (recv_into), small sends copied once into a libzmq message, big
ones zero-copy (we wait for libzmq to release them before returning, since the caller
modifies the tensor next), a fixed 16-byte struct header instead of msgpack.
"""

from __future__ import annotations

import numpy as np
import torch
import zmq

from core.comm import wire
from core.comm.plane import ZERO_COPY_MIN as _ZC
from core.comm.plane import DataPlane, check_tensor, flat_array
from core.errors import ProtocolError

_SNDMORE = zmq.SNDMORE
_PARTIAL, _RESULT = wire.Kind.PARTIAL, wire.Kind.RESULT


def _add(t: torch.Tensor, dst: np.ndarray, src: np.ndarray) -> None:
    """dst += src elementwise (dst is a view of t)."""
    if t.dtype == torch.bfloat16:  # numpy holds raw bf16 bits here: let torch add
        torch.from_numpy(dst).view(torch.bfloat16).add_(torch.from_numpy(src).view(torch.bfloat16))
    else:
        np.add(dst, src, out=dst)


def star_allreduce_(p: DataPlane, t: torch.Tensor) -> torch.Tensor:
    """Sum `t` across ranks in place through rank 0 (fast links first, then ZeroMQ)."""
    p.seq = seq = (p.seq + 1) & 0xFFFFFFFF
    arr, raw = p.views(t)  # flat numpy view, byte view
    if p.rank != 0:
        if p.fast:
            fl = p.fast[0]
            fl.send(_PARTIAL, seq, raw)
            fl.recv(_RESULT, seq, raw, p.closing)  # sendmsg copied our partial: safe
            return t
        return _star_worker_zmq(p, arr, seq, t)

    slots, slot_bytes = p.slots(arr.size, arr.dtype)  # [ws - 1, numel]
    fast = p.fast_order
    for fl in fast:  # in rank order; the kernel buffers whoever is early
        fl.recv(_PARTIAL, seq, slot_bytes[fl.peer - 1], p.closing, fast)
    if p.zmq_workers:
        _star_gather_zmq(p, arr, seq, slots)
    for r in range(p.world_size - 1):  # rank order, not arrival order: deterministic sums
        _add(t, arr, slots[r])
    for fl in fast:
        fl.send(_RESULT, seq, raw)
    if p.zmq_workers:
        _star_scatter_zmq(p, arr, seq)
    return t


def _star_worker_zmq(p: DataPlane, arr: np.ndarray, seq: int, t: torch.Tensor) -> torch.Tensor:
    """Worker side of the star over ZeroMQ (a remote rank, or transport "zmq")."""
    n = arr.nbytes
    sock = p.star
    trackers: list = []
    if p.link is None and n < _ZC:
        sock.send(wire.pack(wire.Kind.PARTIAL, seq, n), _SNDMORE)
        sock.send(arr)
    else:
        p.send(sock, [wire.pack(wire.Kind.PARTIAL, seq, n), arr], trackers)
    nh = p.wait_first(sock, lambda: sock.recv_into(p.hdr), "rank 0", p.op_timeout)
    p.check_hot(sock, nh, wire.Kind.RESULT, seq, n)
    # Our partial is already on the wire (rank 0 answered), so overwriting is safe.
    p.recv_payload(sock, arr)
    if trackers:
        p.wait_sent(trackers)
    return t


def _star_gather_zmq(p: DataPlane, arr: np.ndarray, seq: int, slots: np.ndarray) -> None:
    """Rank 0: receive the partials of the ZeroMQ workers into their slots."""
    n = arr.nbytes
    sock = p.star
    got = [r not in p.zmq_workers for r in range(p.world_size)]
    missing = len(p.zmq_workers)
    while missing:
        ident = p.wait_first(sock, sock.recv, _missing_ranks(got), p.op_timeout)
        r = p.rank_of.get(ident)
        if r is None or r in p.fast:  # a stranger: drop its frames, keep waiting for peers
            p.dropped += 1
            p.drain(sock)
            continue
        p.recv_hot(sock, wire.Kind.PARTIAL, seq, n)
        if got[r]:
            p.drain(sock)
            raise ProtocolError(f"rank {r} sent two partials for one allreduce.")
        p.recv_payload(sock, slots[r - 1])
        got[r] = True
        missing -= 1


def _star_scatter_zmq(p: DataPlane, arr: np.ndarray, seq: int) -> None:
    """Rank 0: send the sum to the ZeroMQ workers."""
    sock = p.star
    hdr = wire.pack(wire.Kind.RESULT, seq, arr.nbytes)
    if p.link is None and arr.nbytes < _ZC:
        for r in p.zmq_workers:
            sock.send(p.ident_of[r], _SNDMORE)
            sock.send(hdr, _SNDMORE)
            sock.send(arr)
    else:
        trackers: list = []
        for r in p.zmq_workers:
            p.send(sock, [p.ident_of[r], hdr, arr], trackers)
        p.wait_sent(trackers)


def _missing_ranks(got: list[bool]) -> str:
    miss = [str(r) for r in range(1, len(got)) if not got[r]]
    return ("rank " if len(miss) == 1 else "ranks ") + ", ".join(miss)


def _chunks(numel: int, n: int) -> list[tuple[int, int]]:
    """Element ranges of n nearly equal chunks of a tensor of numel elements."""
    base, extra = divmod(numel, n)
    out, start = [], 0
    for i in range(n):
        size = base + (i < extra)
        out.append((start, start + size))
        start += size
    return out


def ring_allreduce_(p: DataPlane, t: torch.Tensor) -> torch.Tensor:
    """Sum `t` across ranks in place: ring reduce-scatter, then ring all-gather."""
    p.seq = seq = (p.seq + 1) & 0xFFFFFFFF
    ws, r = p.world_size, p.rank
    arr = flat_array(t)
    chunks = _chunks(arr.size, ws)
    scratch = p.scratch(chunks[0][1] - chunks[0][0], arr.dtype)
    isz = arr.itemsize
    trackers: list = []
    who = f"rank {p.prev}"
    ring_in, ring_out = p.ring_in, p.ring_out

    def recv_chunk(into: np.ndarray) -> None:
        while True:
            ident = p.wait_first(ring_in, ring_in.recv, who, p.op_timeout)
            if ident == p.ring_prev_ident:
                break
            p.dropped += 1  # a stranger on our ring socket
            p.drain(ring_in)
        p.recv_hot(ring_in, wire.Kind.RING, seq, into.nbytes)
        p.recv_payload(ring_in, into)

    for step in range(ws - 1):  # reduce-scatter: chunk c ends fully summed on rank c - 1
        a, b = chunks[(r - step) % ws]
        p.send(ring_out, [wire.pack(wire.Kind.RING, seq, (b - a) * isz), arr[a:b]], trackers)
        a, b = chunks[(r - step - 1) % ws]
        recv_chunk(scratch[:b - a])
        _add(t, arr[a:b], scratch[:b - a])
    p.wait_sent(trackers)  # chunks are overwritten in place below
    for step in range(ws - 1):  # all-gather the summed chunks
        a, b = chunks[(r + 1 - step) % ws]
        p.send(ring_out, [wire.pack(wire.Kind.RING, seq, (b - a) * isz), arr[a:b]], trackers)
        a, b = chunks[(r - step) % ws]
        recv_chunk(arr[a:b])
    p.wait_sent(trackers)
    return t


def allreduce_(p: DataPlane, t: torch.Tensor, algorithm: str | None = None) -> torch.Tensor:
    """Dispatch to the group's (or the given) algorithm; a world of one is a no-op."""
    if p.world_size == 1:
        return t
    algo = algorithm or p.algorithm
    if algo == "star":
        return star_allreduce_(p, t)  # p.views checks the tensor
    if algo == "ring":
        if not p.wire_ring:
            raise ValueError("this group was made without ring links (ring=False)")
        check_tensor(t)
        return ring_allreduce_(p, t)
    raise ValueError(f"unknown allreduce algorithm {algo!r}")
