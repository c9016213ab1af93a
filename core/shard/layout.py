"""Where a split lives on disk: folder names, shard dtypes and temp dirs.

A split of one model for one plan and dtype is `<out_root>/<model_hash>-<plan key>-<dtype>/`,
holding one `rank{r}/` dir per rank. Names are built only from validated parts, so a model
hash or dtype that came over the wire cannot make a path that escapes the cache dir.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from core.errors import ShardError
from core.shard.plan import Plan

FLOAT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,  # weight-only: int8 matrices with per-row scales, see quant.py
}
# Block-quantized matrices (qformats.py); "gguf" keeps each GGUF matrix's own format.
QUANT_DTYPES = ("q8_0", "q4_0", "q4_1", "gguf")
SHARD_DTYPES = (*FLOAT_DTYPES, *QUANT_DTYPES)
AUTO = "auto"  # a GGUF keeps its quantization ("gguf"), a Hugging Face folder is float32
# What users type (`--dtype`); the long names above are accepted too.
SHORT_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "q8": "q8_0",
               "q4": "q4_1"}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{0,127}$")
TMP_MARK = ".tmp-"


def dtype_name(dtype: torch.dtype | str) -> str:
    """torch.float16 or 'fp16' -> 'float16', refusing what shards cannot store."""
    if isinstance(dtype, str):
        return parse_dtype(dtype)
    for name, d in FLOAT_DTYPES.items():
        if d == dtype:
            return name
    raise ShardError(f"shards can be float32, float16, bfloat16 or int8, not {dtype}")


def parse_dtype(name: str) -> str:
    """'bf16' or 'bfloat16' -> 'bfloat16', with a clear error for anything else."""
    full = SHORT_NAMES.get(name, name) if isinstance(name, str) else None
    if full not in SHARD_DTYPES:
        raise ShardError(
            f"unknown shard dtype {name!r} (use auto, fp32, bf16, fp16, int8, q8 or q4)"
        )
    return full


def is_quantized(dtype: str) -> bool:
    """Whether shards of this dtype hold block-quantized matrices (qformats.py)."""
    return dtype in QUANT_DTYPES


def check_model_hash(model_hash: str) -> str:
    """Return `model_hash` if it is safe to use in a folder name, else raise ShardError."""
    if not isinstance(model_hash, str) or not _SAFE_ID.match(model_hash):
        raise ShardError(f"model hash {model_hash!r} is not a plain id (letters, digits, _)")
    return model_hash


def split_root(out_root: Path, model_hash: str, plan: Plan, dtype: torch.dtype | str) -> Path:
    """The folder holding every rank dir of this (model, plan, dtype) split."""
    return Path(out_root) / f"{check_model_hash(model_hash)}-{plan.key()}-{dtype_name(dtype)}"


def rank_dir(root: Path, rank: int) -> Path:
    return Path(root) / f"rank{int(rank)}"


def tmp_rank_dir(root: Path, rank: int) -> Path:
    """Where this process writes a rank dir before renaming it into place."""
    return Path(root) / f"rank{int(rank)}{TMP_MARK}{os.getpid()}"


def stale_tmp_dirs(root: Path) -> list[Path]:
    """Temp rank dirs left behind by processes that no longer run (killed mid-split)."""
    out = []
    if not Path(root).is_dir():
        return out
    for p in Path(root).iterdir():
        head, mark, pid = p.name.partition(TMP_MARK)
        if not (mark and head.startswith("rank") and pid.isdigit() and p.is_dir()):
            continue
        if int(pid) == os.getpid() or not _pid_alive(int(pid)):
            out.append(p)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.pid_exists(pid)
    except ImportError:  # psutil is a dependency, but a stale dir is not worth a crash
        return False
