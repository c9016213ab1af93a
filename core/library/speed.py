"""A measured decode speed in weight bytes per second, to predict other models' speed.

Decoding one token reads every weight once, so a reply's tokens/s times the model's weight
bytes is what the devices get through per second; a model of another size is expected at
about that rate (fixed per-token costs make small models look slower than this predicts
for big ones, so the estimate errs on the slow side for big models).
"""

from __future__ import annotations

from pathlib import Path

from core.errors import ModelError
from core.model.default_model import default_gguf_path

_WEIGHT_SUFFIXES = (".gguf", ".safetensors")


def weight_bytes(model: str | None) -> int | None:
    """Bytes of the weights of `model` (None: the default model); None if unknown."""
    try:
        p = default_gguf_path() if model is None else Path(model).expanduser()
        if p.is_file():
            return p.stat().st_size
        if p.is_dir():
            total = sum(f.stat().st_size for f in p.iterdir()
                        if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
            return total or None
    except (OSError, ModelError):
        return None
    return None


def bytes_per_second(model: str | None, tokens_per_s: float) -> float | None:
    """The measured rate of a reply at `tokens_per_s` on `model`, or None."""
    size = weight_bytes(model)
    if not size or not tokens_per_s or tokens_per_s <= 0:
        return None
    return size * tokens_per_s
