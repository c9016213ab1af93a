"""A cheap fallback model hash: identifies a model dir without reading its weights.

Hashes config.json, then each weight file's name, size and safetensors header (the
header lists every tensor's name, dtype, shape and offsets). Editing a weight value in
place without changing any of those would go unnoticed; re-downloads and conversions do
change sizes or headers. core/model/model_dir.py may provide the canonical hash instead.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from core.errors import ModelError
from core.model.gguf_import import POINTER

_MAX_HEADER = 100 << 20  # safetensors itself refuses headers over 100 MB


def model_fingerprint(model_dir: Path, weight_files: list[Path]) -> str:
    """16 hex chars identifying `model_dir` (config plus weight file headers)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    try:
        h.update((model_dir / "config.json").read_bytes())
        if (model_dir / POINTER).is_file():  # an imported GGUF: its key samples the file
            h.update((model_dir / POINTER).read_bytes())
            return h.hexdigest()[:16]
        for f in sorted(weight_files, key=lambda p: p.name):
            h.update(f"\0{f.name}\0{f.stat().st_size}\0".encode())
            h.update(_header(f))
    except OSError as e:
        raise ModelError(f"cannot read the model folder {model_dir} ({e})") from None
    return h.hexdigest()[:16]


def _header(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelError(f"{path.name} is not a valid safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER:
            raise ModelError(f"{path.name} is not a valid safetensors file (header too large)")
        header = f.read(n)
    if len(header) != n:
        raise ModelError(f"{path.name} is not a valid safetensors file (truncated header)")
    return header
