"""Tensor-by-tensor access to the weights of a Hugging Face model dir.

Reads `model.safetensors` or the shards named by `model.safetensors.index.json`, opening
each file lazily and reading one tensor (or one slice of one) at a time, so a model larger
than RAM can be walked through.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from core.errors import ModelError


class WeightReader:
    """Maps HF tensor names to the safetensors file that holds them."""

    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        self._open: dict[Path, object] = {}
        self._where = self._index()

    def _index(self) -> dict[str, Path]:
        index = self.model_dir / "model.safetensors.index.json"
        if index.is_file():
            try:
                wmap = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as e:
                raise ModelError(f"{index} is unreadable ({e})") from None
            where = {name: self.model_dir / f for name, f in wmap.items()}
        else:
            files = sorted(self.model_dir.glob("*.safetensors"))
            if not files:
                raise ModelError(f"{self.model_dir} has no *.safetensors weight files")
            where = {}
            for f in files:
                for name in self._handle(f).keys():
                    where[name] = f
        for f in set(where.values()):
            if not f.is_file():
                raise ModelError(f"weight file {f.name} named in the index is missing")
        return where

    def _handle(self, path: Path):
        h = self._open.get(path)
        if h is None:
            try:
                h = safe_open(str(path), framework="pt")
            except Exception as e:  # safetensors raises its own error types
                raise ModelError(f"{path.name} is not a valid safetensors file ({e})") from None
            self._open[path] = h
        return h

    def close(self) -> None:
        """Drop every open file (its mapping goes with the last reference to it)."""
        self._open.clear()

    def __enter__(self) -> WeightReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def names(self) -> list[str]:
        return list(self._where)

    def has(self, name: str) -> bool:
        return name in self._where

    def files(self) -> list[Path]:
        return sorted(set(self._where.values()))

    def get(self, name: str) -> torch.Tensor:
        """The whole tensor `name`."""
        return self._handle(self._file(name)).get_tensor(name)

    def get_rows(self, name: str, start: int, end: int) -> torch.Tensor:
        """Rows [start, end) of a tensor, reading only those bytes."""
        return self._handle(self._file(name)).get_slice(name)[start:end]

    def get_cols(self, name: str, start: int, end: int) -> torch.Tensor:
        """Columns [start, end) of a 2-D tensor."""
        return self._handle(self._file(name)).get_slice(name)[:, start:end]

    def _file(self, name: str) -> Path:
        try:
            return self._where[name]
        except KeyError:
            raise ModelError(f"the model weights lack the tensor {name!r}") from None
