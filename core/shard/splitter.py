"""Split a Hugging Face model dir into per-rank block files for a tensor-parallel plan.

Streaming: the model is walked one layer at a time and each layer's blocks are written to
every rank before the next layer is read, so peak memory is about one block (plus, for
rank 0, the embedding), never the model. Each rank dir is written under a temp name with
its manifest last, then renamed into place: a rank dir with a valid manifest is complete,
and a split killed half way leaves nothing that looks finished. A split whose rank dirs
are already complete is not redone; only missing or damaged ranks are rewritten.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.errors import ShardError
from core.model.config import ModelConfig, load_config
from core.model.gguf_weights import open_weights
from core.progress import StageProgress
from core.shard.block_builder import Block, BlockBuilder
from core.shard.blocks import EMBED, FORMAT_VERSION, HEAD, attn_block, block_file, mlp_block
from core.shard.fingerprint import model_fingerprint
from core.shard.layout import (
    AUTO,
    dtype_name,
    rank_dir,
    split_root,
    stale_tmp_dirs,
    tmp_rank_dir,
)
from core.shard.manifest import (
    BlockInfo,
    Manifest,
    load_manifest,
    sha256_file,
    verify_block,
    write_manifest,
)
from core.shard.plan import Plan


@dataclass
class SplitResult:
    """Where a split landed; `cached` when every rank dir was already complete."""

    root: Path
    rank_dirs: list[Path]
    plan: Plan
    cached: bool
    bytes_per_rank: list[int] = field(default_factory=list)
    dtype: str = "float32"
    conversions: list[str] = field(default_factory=list)  # lossy format changes, measured


def split_model(
    model_dir: Path,
    plan: Plan,
    out_root: Path,
    dtype: torch.dtype | str = AUTO,
    progress: StageProgress | None = None,
    model_hash: str | None = None,
    *,
    on_written: Callable[[int], None] | None = None,
) -> SplitResult:
    """Write `out_root/<model_hash>-<plan.key()>-<dtype>/rank{r}/` for every rank of `plan`.

    `dtype` is a shard dtype (core.shard.layout), or "auto": a GGUF's own quantization,
    float32 for a Hugging Face folder. `progress(done, total)` is called after each block
    file is written (not at all when
    the split is cached); `on_written(nbytes)` too, with that file's size. `model_hash`
    defaults to a fingerprint of config.json and the weight file headers.
    """
    model_dir = Path(model_dir)
    cfg = load_config(model_dir)
    check_plan(cfg, plan)
    with open_weights(model_dir) as reader:  # closed after: the app splits many models
        mhash = model_hash or model_fingerprint(model_dir, reader.files())
        dname = resolve_dtype(dtype, reader)
        root = split_root(out_root, mhash, plan, dname)
        dirs = [rank_dir(root, r) for r in range(plan.world_size)]

        done = {r: complete_manifest(dirs[r], mhash, plan, dname)
                for r in range(plan.world_size)}
        todo = [r for r, m in done.items() if m is None]
        if todo:
            root.mkdir(parents=True, exist_ok=True)
            for stale in stale_tmp_dirs(root):
                shutil.rmtree(stale, ignore_errors=True)
            written = _write_ranks(
                _Job(cfg, plan, mhash, dname, root, todo, BlockBuilder(reader, cfg, dname)),
                progress,
                on_written,
            )
            done.update(written)
        report = getattr(reader, "report", None)
    return SplitResult(
        root=root,
        rank_dirs=dirs,
        plan=plan,
        cached=not todo,
        bytes_per_rank=[done[r].total_bytes for r in range(plan.world_size)],
        dtype=dname,
        conversions=report.lines() if report else [],
    )


def resolve_dtype(dtype: torch.dtype | str, reader: object) -> str:
    """The shard dtype name to write: 'auto' keeps a GGUF's own weights, else float32."""
    if dtype == AUTO:
        native = getattr(reader, "native_dtype", None)
        return native() if native else "float32"
    name = dtype_name(dtype)
    if name == "gguf" and not hasattr(reader, "qrows"):
        raise ShardError("dtype 'gguf' keeps a GGUF file's own quantization; this model is a "
                         "Hugging Face folder (use q8, q4, int8 or a float dtype)")
    return name


def check_plan(cfg: ModelConfig, plan: Plan) -> None:
    """Refuse a plan made for another model: ranks must tile heads and columns exactly."""
    k = c = 0
    for i, s in enumerate(plan.ranks):
        if s.rank != i or s.kv_start != k or s.col_start != c or s.kv_end < k or s.col_end < c:
            raise ShardError(f"the plan is malformed at rank {i}; make a new plan for this model")
        k, c = s.kv_end, s.col_end
    if not plan.ranks or k != cfg.num_kv_heads or c != cfg.intermediate_size:
        raise ShardError(
            f"the plan covers {k} KV heads and {c} MLP columns but the model has "
            f"{cfg.num_kv_heads} and {cfg.intermediate_size}; make a new plan for this model"
        )


def complete_manifest(rdir: Path, model_hash: str, plan: Plan, dtype: str) -> Manifest | None:
    """The manifest of `rdir` if it is a finished split of this model/plan/dtype, else None.

    Checks file sizes only (a stat per block), so a cached split is recognised quickly.
    """
    try:
        m = load_manifest(rdir)
        if (m.model_hash, m.plan.ranks, m.dtype) != (model_hash, plan.ranks, dtype):
            return None
        for b in m.blocks:
            verify_block(rdir, b, full=False)
    except ShardError:
        return None
    return m


@dataclass
class _Job:
    cfg: ModelConfig
    plan: Plan
    model_hash: str
    dtype: str
    root: Path
    todo: list[int]
    builder: BlockBuilder


def _block_count(cfg: ModelConfig, rank: int) -> int:
    return 2 * cfg.num_layers + (2 if rank == 0 else 0)


def _write_ranks(
    job: _Job, progress: StageProgress | None, on_written: Callable[[int], None] | None
) -> dict[int, Manifest]:
    tmp = {r: tmp_rank_dir(job.root, r) for r in job.todo}
    infos: dict[int, list[BlockInfo]] = {r: [] for r in job.todo}
    total = sum(_block_count(job.cfg, r) for r in job.todo)
    count = 0

    def emit(r: int, name: str, make: Callable[..., Block], *args: object) -> None:
        nonlocal count
        info = _write_block(tmp[r], name, make(*args))
        infos[r].append(info)
        count += 1
        if on_written:
            on_written(info.bytes)
        if progress:
            progress(count, total)

    try:
        for r in job.todo:
            tmp[r].mkdir(parents=True)
        b, ranks = job.builder, job.plan.ranks
        if 0 in job.todo:
            if not job.cfg.tie_word_embeddings:
                emit(0, EMBED, b.embed)
            emit(0, HEAD, b.head)
        for i in range(job.cfg.num_layers):
            for r in job.todo:
                emit(r, attn_block(i), b.attn, i, ranks[r])
            for r in job.todo:
                emit(r, mlp_block(i), b.mlp, i, ranks[r])
        out = {}
        for r in job.todo:
            m = Manifest(
                format_version=FORMAT_VERSION,
                model_hash=job.model_hash,
                config=job.cfg,
                plan=job.plan,
                rank=r,
                dtype=job.dtype,
                blocks=tuple(infos[r]),
            )
            write_manifest(tmp[r], m)  # last: its presence marks the dir complete
            _move_into_place(tmp[r], rank_dir(job.root, r), m)
            out[r] = m
        return out
    finally:
        for d in tmp.values():
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)


def _write_block(rdir: Path, name: str, tensors: Block) -> BlockInfo:
    path = rdir / block_file(name)
    save_file(tensors, str(path))
    shapes = {k: tuple(v.shape) for k, v in sorted(tensors.items())}
    with open(path, "r+b") as f:  # r+b: Windows cannot fsync a read-only handle
        os.fsync(f.fileno())
    return BlockInfo(
        name=name,
        file=path.name,
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
        tensors=shapes,
    )


def _move_into_place(tmp: Path, final: Path, m: Manifest) -> None:
    if final.exists():
        if complete_manifest(final, m.model_hash, m.plan, m.dtype) is not None:
            return  # another process finished it meanwhile (and may be using it): keep it
        shutil.rmtree(final)  # left over from a damaged split
    try:
        os.rename(tmp, final)
    except OSError as e:
        # Another process may have finished the same rank in the meantime: that is fine.
        if complete_manifest(final, m.model_hash, m.plan, m.dtype) is None:
            raise ShardError(f"cannot move the new shard into {final} ({e})") from None
