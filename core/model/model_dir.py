"""Turn what the user chose (nothing, a GGUF file, a folder) into a validated HF model dir.

`resolve_model` is the one entry point the CLI and the app call before loading anything:
it imports GGUF files (the default model included) and checks a folder has a config we
support, weights and a tokenizer, so a bad choice fails with one sentence up front.
`model_hash` names a model's weights cheaply, as the key of its shard cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from core.errors import ModelError
from core.model.config import load_config
from core.model.default_model import default_gguf_path
from core.model.gguf_import import import_gguf
from core.model.gguf_weights import is_gguf_dir, open_weights, read_pointer
from core.progress import StageProgress

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_SAMPLE = 64 * 1024
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def resolve_model(
    path: str | Path | None, progress: StageProgress | None = None
) -> Path:
    """The HF model dir for `path`: None means the default model; GGUF files are imported."""
    if path is None:
        return import_gguf(default_gguf_path(), progress)
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"the model {p} does not exist")
    if p.is_file():
        if p.name == "config.json" or p.suffix == ".safetensors":
            return validate_model_dir(p.parent)  # picked a file inside a model folder
        return import_gguf(p, progress)
    ggufs = sorted(p.glob("*.gguf"))
    if not (p / "config.json").exists() and len(ggufs) == 1:
        return import_gguf(ggufs[0], progress)  # picked the folder holding one GGUF
    return validate_model_dir(p)


def validate_model_dir(model_dir: Path) -> Path:
    """`model_dir` if it has a supported config.json, weights and a tokenizer."""
    model_dir = Path(model_dir)
    load_config(model_dir)
    open_weights(model_dir).close()  # opening checks every weight file's header
    has_tokenizer = any((model_dir / f).is_file() for f in _TOKENIZER_FILES) or all(
        (model_dir / f).is_file() for f in ("vocab.json", "merges.txt")
    )
    if not has_tokenizer:
        raise ModelError(f"{model_dir} has no tokenizer (tokenizer.json or tokenizer.model)")
    return model_dir


def model_hash(model_dir: str | Path) -> str:
    """16 hex chars identifying config and weights, reading well under 1 MiB per file.

    Hashes config.json and, per weight file, its name, size, safetensors header (every
    tensor's name, dtype, shape and offset) and 64 KiB samples of the data at start, middle
    and end: any re-export, re-quantization or swapped file changes it.
    """
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    try:
        h.update((model_dir / "config.json").read_bytes())
    except OSError:
        raise ModelError(f"{model_dir} is not a model folder: it has no config.json") from None
    if is_gguf_dir(model_dir):  # the import's key already samples the GGUF's contents
        h.update(json.dumps(read_pointer(model_dir), sort_keys=True).encode())
        return h.hexdigest()[:16]
    with open_weights(model_dir) as reader:
        files = reader.files()
    for f in files:
        _hash_weight_file(h, f)
    return h.hexdigest()[:16]


def _hash_weight_file(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(f"\0{path.name}\0{size}\0".encode())
    with open(path, "rb") as f:
        raw_len = f.read(8)
        header_len = int.from_bytes(raw_len, "little") if len(raw_len) == 8 else -1
        if not 0 <= header_len <= min(_MAX_HEADER, size - 8):
            raise ModelError(f"{path.name} is not a valid safetensors file")
        h.update(raw_len + f.read(header_len))
        start = 8 + header_len
        data_len = size - start
        for offset in (start, start + data_len // 2, max(start, size - _SAMPLE)):
            f.seek(offset)
            h.update(f.read(_SAMPLE))
