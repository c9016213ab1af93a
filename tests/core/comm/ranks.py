"""Worker-rank entry points for the comm tests, run in spawned processes (one per rank)."""

from __future__ import annotations

import os
from typing import Any

import torch

SHAPES = [(1, 576), (7, 2048), (3, 5), (1, 1)]


def rank_tensor(rank: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A tensor that differs per rank, reproducible by the parent to check the sum."""
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    return torch.randn(shape, generator=g)


def int_tensor(rank: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Integer-valued floats: every summation order gives the same, exact result."""
    n = 1
    for s in shape:
        n *= s
    return (torch.arange(n, dtype=torch.float32) * (rank + 1) + rank).view(shape)


def run_worker(rank: int, world_size: int, endpoints: dict[str, Any], out: Any,
               op_timeout: float = 20.0) -> None:
    """Follow rank 0's steps; report every allreduce result back through `out`."""
    torch.set_num_threads(1)
    from core.comm.group import CommGroup
    g = CommGroup.worker(rank, world_size, endpoints, op_timeout=op_timeout, join_timeout=60)
    try:
        while True:
            meta, x = g.recv_step(timeout=60)
            op = meta["op"]
            if op == "stop":
                break
            if op == "echo":
                out.put((rank, "echo", meta, None if x is None else x.clone()))
            elif op == "allreduce":
                shape, algo = tuple(meta["shape"]), meta["algorithm"]
                if meta["kind"] == "int":
                    t = int_tensor(rank, shape)
                else:
                    t = rank_tensor(rank, shape, meta["seed"])
                g.allreduce_(t, algo)
                out.put((rank, "allreduce", meta, t))
            elif op == "die":
                os._exit(3)  # vanish mid-collective, like a crashed or unplugged peer
    finally:
        g.close()
