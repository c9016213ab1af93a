"""The `manifest.json` of a rank's shard dir: what it holds and how to check it.

`read_block` loads one block file checked against it. The engine's memory scheduler calls
it from its prefetch thread, so nothing here holds global state: every call opens, reads
and closes its own file.

The manifest is written last, so a dir with a valid manifest is complete. It records the
format version, the model hash, the model config, the plan, the rank, the dtype and, per
block, the file name, size, sha256 and tensor shapes. Everything read back is validated:
manifests also arrive from other devices, so a block name cannot point outside its dir.

Example (rank 1 of 2, a tiny Llama):
    {"format_version": 1, "model_hash": "3f0c9a1e2b7d4c55", "rank": 1, "dtype": "float32",
     "config": {"arch": "llama", "vocab_size": 512, ...},
     "plan": {"ranks": [...], "shares": [1.0, 1.0]},
     "blocks": [{"name": "L000.attn", "file": "L000.attn.safetensors", "bytes": 25032,
                 "sha256": "9b1f...", "tensors": {"norm": [64], "wqkv": [64, 64], "wo": [64, 32]}},
                ...]}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file

from core.errors import ShardError
from core.model.config import ModelConfig
from core.shard.blocks import FORMAT_VERSION, MANIFEST, block_file, stored_dtype
from core.shard.layout import check_model_hash, parse_dtype
from core.shard.plan import Plan, RankShare

_BLOCK_NAME = re.compile(r"^(embed|head|L\d{3,}\.(attn|mlp))$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BlockInfo:
    """One block file of a rank dir, as recorded in its manifest."""

    name: str
    file: str
    bytes: int
    sha256: str
    tensors: dict[str, tuple[int, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "tensors": {k: list(v) for k, v in self.tensors.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockInfo:
        name, file = str(d["name"]), str(d["file"])
        # The file name is derived, never trusted: this is what keeps paths inside the dir.
        if not _BLOCK_NAME.match(name) or file != block_file(name):
            raise ValueError(f"bad block name {name!r} / file {file!r}")
        size, digest = int(d["bytes"]), str(d["sha256"])
        if size < 0 or not _HEX64.match(digest):
            raise ValueError(f"bad size or sha256 for block {name}")
        tensors = {}
        for k, shape in dict(d["tensors"]).items():
            if not _TENSOR_NAME.match(k) or any(int(n) < 0 for n in shape):
                raise ValueError(f"bad tensor entry {k!r} in block {name}")
            tensors[k] = tuple(int(n) for n in shape)
        return cls(name=name, file=file, bytes=size, sha256=digest, tensors=tensors)


@dataclass(frozen=True)
class Manifest:
    """Everything a rank needs to know about its shard dir."""

    format_version: int
    model_hash: str
    config: ModelConfig
    plan: Plan
    rank: int
    dtype: str  # a name of core.shard.layout.SHARD_DTYPES
    blocks: tuple[BlockInfo, ...]

    @property
    def share(self) -> RankShare:
        return self.plan.ranks[self.rank]

    @property
    def total_bytes(self) -> int:
        return sum(b.bytes for b in self.blocks)

    def block_names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def block(self, name: str) -> BlockInfo:
        for b in self.blocks:
            if b.name == name:
                return b
        raise ShardError(f"rank {self.rank}'s shard has no block named {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "model_hash": self.model_hash,
            "rank": self.rank,
            "dtype": self.dtype,
            "config": self.config.to_dict(),
            "plan": self.plan.to_dict(),
            "blocks": [b.to_dict() for b in self.blocks],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Rebuild and validate; raises ValueError, KeyError, TypeError or ShardError."""
        version = int(d["format_version"])
        if version != FORMAT_VERSION:
            raise _VersionError(version)
        plan = Plan.from_dict(d["plan"])
        rank = int(d["rank"])
        if not 0 <= rank < plan.world_size:
            raise ValueError(f"rank {rank} is outside the plan's {plan.world_size} ranks")
        dtype = parse_dtype(str(d["dtype"]))
        return cls(
            format_version=version,
            model_hash=check_model_hash(str(d["model_hash"])),
            config=ModelConfig.from_dict(d["config"]),
            plan=plan,
            rank=rank,
            dtype=dtype,
            blocks=tuple(BlockInfo.from_dict(b) for b in d["blocks"]),
        )


class _VersionError(ValueError):
    def __init__(self, version: int):
        super().__init__(version)
        self.version = version


def load_manifest(rank_dir: Path) -> Manifest:
    """Read and validate `rank_dir/manifest.json`; ShardError if missing or corrupt."""
    rank_dir = Path(rank_dir)
    path = rank_dir / MANIFEST
    if not rank_dir.is_dir():
        raise ShardError(f"shard folder {rank_dir} does not exist")
    if not path.is_file():
        raise ShardError(
            f"shard folder {rank_dir} is incomplete (it has no {MANIFEST}); delete it to re-split"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return Manifest.from_dict(data)
    except _VersionError as e:
        raise ShardError(
            f"shard folder {rank_dir} has format version {e.version} but this app reads "
            f"version {FORMAT_VERSION}; delete it to re-split"
        ) from None
    except (ShardError, OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ShardError(
            f"{rank_dir.name}/{MANIFEST} is corrupt ({e}); delete {rank_dir} to re-split"
        ) from None


def write_manifest(rank_dir: Path, manifest: Manifest) -> Path:
    """Write the manifest atomically (temp file, fsync, rename)."""
    path = Path(rank_dir) / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest.to_dict(), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in chunks so a large block never sits in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_block(rank_dir: Path, block: BlockInfo | str, full: bool = False) -> None:
    """Check one block file: its size always (cheap), its sha256 too when `full`.

    `block` is a BlockInfo or a block name (then the manifest is read to find it).
    """
    rank_dir = Path(rank_dir)
    if isinstance(block, str):
        block = load_manifest(rank_dir).block(block)
    path = rank_dir / block.file
    shown = f"{rank_dir.name}/{block.file}"
    try:
        size = path.stat().st_size
    except OSError:
        raise ShardError(f"shard file {shown} is missing; delete {rank_dir} to re-split") from None
    if size != block.bytes:
        raise ShardError(
            f"shard file {shown} is truncated or corrupt (expected {block.bytes} bytes, "
            f"found {size}); delete {rank_dir} to re-split"
        )
    if full and sha256_file(path) != block.sha256:
        raise ShardError(
            f"shard file {shown} is corrupt (its sha256 does not match the manifest); "
            f"delete {rank_dir} to re-split"
        )


def verify_rank(rank_dir: Path, full: bool = False) -> Manifest:
    """Load the manifest and verify every block it lists; returns the manifest."""
    manifest = load_manifest(rank_dir)
    for b in manifest.blocks:
        verify_block(rank_dir, b, full)
    return manifest


def read_block(
    rank_dir: Path, manifest: Manifest, name: str, check_hash: bool = False
) -> dict[str, torch.Tensor]:
    """The tensors of block `name`, checked against the manifest.

    The size is always checked first (a cheap stat), then names, shapes and dtype after
    loading. `check_hash` also compares the sha256, reading the file once into memory.
    """
    rank_dir = Path(rank_dir)
    info = manifest.block(name)
    verify_block(rank_dir, info, full=False)
    path = rank_dir / info.file
    shown = f"{rank_dir.name}/{info.file}"
    advice = f"delete {rank_dir} to re-split"
    try:
        if check_hash:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != info.sha256:
                raise ShardError(
                    f"shard file {shown} is corrupt (its sha256 does not match the manifest); "
                    f"{advice}"
                )
            tensors = load_bytes(data)
        else:
            tensors = load_file(str(path))
    except ShardError:
        raise
    except Exception as e:  # safetensors raises its own types for a damaged header
        raise ShardError(f"shard file {shown} is truncated or corrupt ({e}); {advice}") from None

    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != info.tensors:
        raise ShardError(
            f"shard file {shown} does not hold the tensors its manifest lists; {advice}"
        )
    if any(t.dtype != stored_dtype(manifest.dtype, k) for k, t in tensors.items()):
        raise ShardError(
            f"shard file {shown} is not {manifest.dtype} as its manifest says; {advice}"
        )
    return tensors
