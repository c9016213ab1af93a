"""How many weight bytes of each format a model's layers and head hold, for the cost model.

Read from the manifest of a one-rank split (the split a single computer runs anyway), so
it counts what the shards really store: a GGUF's q4_1 layers and q8_0 head, an int8
shard's scales. A rank of a plan holds its KV-head fraction of every attention block and
its column fraction of every MLP block; the head is rank 0's alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.model.config import ModelConfig
from core.shard.blocks import HEAD, MATRICES, SCALE, parse_part, stored_dtype
from core.shard.manifest import Manifest

Bytes = dict[str, int]  # format (core.cluster.measures.FORMATS) -> bytes


@dataclass(frozen=True)
class ModelBytes:
    """Weight bytes by format: all layers' attention, all layers' MLP, and the head."""

    config: ModelConfig
    attn: Bytes
    mlp: Bytes
    head: Bytes
    block_bytes: int  # the largest layer block of the whole model (file bytes)

    @property
    def layers(self) -> int:
        return self.config.num_layers

    @property
    def formats(self) -> tuple[str, ...]:
        """The weight formats its matrices are stored in."""
        return tuple(sorted({*self.attn, *self.mlp, *self.head}))

    @property
    def total(self) -> int:
        return sum(self.attn.values()) + sum(self.mlp.values()) + sum(self.head.values())

    @classmethod
    def from_manifest(cls, m: Manifest) -> ModelBytes:
        attn: Bytes = {}
        mlp: Bytes = {}
        head: Bytes = {}
        for b in m.blocks:
            into = attn if b.name.endswith(".attn") else mlp if b.name.endswith(".mlp") \
                else head if b.name == HEAD else None
            if into is None:
                continue  # the embedding: one row a token
            for name, shape in b.tensors.items():
                fmt, size = _tensor_bytes(m.dtype, name, shape)
                if fmt is not None:
                    into[fmt] = into.get(fmt, 0) + size
        biggest = max((b.bytes for b in m.blocks if b.name[0] == "L"), default=0)
        return cls(m.config, attn, mlp, head, biggest)


def _tensor_bytes(shard_dtype: str, name: str, shape: tuple[int, ...]
                  ) -> tuple[str | None, int]:
    """(format, bytes) of one matrix tensor of a block; (None, 0) for vectors."""
    n = math.prod(shape)
    part = parse_part(name)
    if part is not None:
        return part[2], n  # uint8 [rows, row bytes]
    base = name[: -len(SCALE)] if name.endswith(SCALE) else name
    if base not in MATRICES:
        return None, 0
    dtype = stored_dtype(shard_dtype, base)
    size = n * (4 if name.endswith(SCALE) else dtype.itemsize)
    fmt = "int8" if str(dtype) == "torch.int8" else str(dtype).removeprefix("torch.")
    return fmt, size


def scaled(b: Bytes, frac: float) -> Bytes:
    return {k: int(v * frac) for k, v in b.items()}
