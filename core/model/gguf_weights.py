"""The weights of an imported GGUF, read straight from the file under Hugging Face names.

An imported GGUF's model dir (core/model/gguf_import.py) holds config.json, the tokenizer
and `gguf.json`, which names the file; no weights are copied. `GgufWeights` answers the
same reads as WeightReader (HF names, [out, in] layout, q/k rows of llama models in HF's
order) in float32, and `qrows`/`qcols` hand out matrix rows or column blocks in a shard's
block format without going through floats where the formats allow (gguf_convert.py).
The file is memory-mapped, so a read costs the bytes it touches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from core.errors import ModelError
from core.model.config import load_config
from core.model.gguf_convert import (
    CARRIED,
    FLOAT_TYPES,
    ConversionReport,
    convert_rows,
    native_format,
)
from core.model.gguf_import import POINTER, hf_tensor_name, unpermute_qk
from core.model.gguf_tensors import read_tensors
from core.shard.qformats import FORMATS, QK, QTensor, check_block_aligned

_COL_CHUNK_ROWS = 256  # rows converted at a time when only some columns are wanted
_CHUNK_FLOATS = 8 << 20  # weights converted at a time (32 MB as fp32): bounds peak memory


def is_gguf_dir(model_dir: Path) -> bool:
    return (Path(model_dir) / POINTER).is_file()


def read_pointer(model_dir: Path) -> dict:
    try:
        d = json.loads((Path(model_dir) / POINTER).read_text(encoding="utf-8"))
        return {"file": str(d["file"]), "size": int(d["size"]), "key": str(d["key"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{model_dir}/{POINTER} is unreadable ({e}); open the GGUF again"
                         ) from None


class GgufWeights:
    """HF-named tensor reads from the GGUF file an imported model dir points at."""

    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        ptr = read_pointer(self.model_dir)
        self.path = Path(ptr["file"])
        try:
            size = self.path.stat().st_size
        except OSError:
            raise ModelError(f"the model file {self.path} is gone; open it again") from None
        if size != ptr["size"]:
            raise ModelError(f"the model file {self.path} has changed; open it again")
        self.cfg = load_config(self.model_dir)
        self.arch = self.cfg.arch
        self._tensors = {}
        for t in read_tensors(self.path).values():
            hf = hf_tensor_name(t.name)
            if hf is not None:
                self._tensors[hf] = t
        self.report = ConversionReport()

    # -- the WeightReader interface -----------------------------------------------------

    def close(self) -> None:
        self._tensors = {}

    def __enter__(self) -> GgufWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def names(self) -> list[str]:
        return list(self._tensors)

    def has(self, name: str) -> bool:
        return name in self._tensors

    def files(self) -> list[Path]:
        return [self.path]

    def get(self, name: str) -> torch.Tensor:
        t = self._tensor(name)
        return self.get_rows(name, 0, self._shape(t)[0]) if len(t.shape) > 1 else self._floats(
            t, np.asarray(t.data)).reshape(-1)

    def get_rows(self, name: str, start: int, end: int) -> torch.Tensor:
        t = self._tensor(name)
        if len(t.shape) == 1:
            return self.get(name)[start:end]
        rows = self._row_index(name, t)[start:end]
        return self._floats(t, np.asarray(t.data)[rows]).view(len(rows), -1)

    def get_cols(self, name: str, start: int, end: int) -> torch.Tensor:
        t = self._tensor(name)
        n = self._shape(t)[0]
        parts = [self.get_rows(name, r, min(n, r + _COL_CHUNK_ROWS))[:, start:end].clone()
                 for r in range(0, n, _COL_CHUNK_ROWS)]
        return torch.cat(parts) if parts else torch.empty(0, end - start)

    # -- block-format reads -------------------------------------------------------------

    def native_dtype(self) -> str:
        """The shard dtype that keeps this file's weights as they are ('gguf' when any
        matrix is quantized)."""
        types = {int(t.tensor_type) for t in self._tensors.values() if len(t.shape) > 1}
        floats = {FLOAT_TYPES.get(ty) for ty in types}
        if None in floats:
            return "gguf"
        return floats.pop() if len(floats) == 1 else "float32"

    def qrows(self, name: str, start: int, end: int, fmt: str | None = None) -> QTensor:
        """Rows [start, end) of a matrix in block format `fmt` (None: the file's own, as
        native_format says)."""
        t = self._tensor(name)
        target = FORMATS[fmt] if fmt else native_format(int(t.tensor_type))
        rows = self._row_index(name, t)[start:end]
        cols = self._shape(t)[1]
        data = np.asarray(t.data)
        out = torch.empty(len(rows), target.row_bytes(cols), dtype=torch.uint8)
        step = max(1, _CHUNK_FLOATS // max(1, cols))  # a big embedding never goes to floats whole
        for r in range(0, len(rows), step):
            q = convert_rows(data[rows[r : r + step]], int(t.tensor_type), cols, target,
                             self.report, name)
            out[r : r + q.rows] = q.data
        return QTensor(target, out, cols)

    def qcols(self, name: str, start: int, end: int, fmt: str | None = None) -> QTensor:
        """Columns [start, end) (block-aligned) of every row, in block format `fmt`."""
        t = self._tensor(name)
        check_block_aligned(start, end, name)
        n = self._shape(t)[0]
        parts = [self.qrows(name, r, min(n, r + _COL_CHUNK_ROWS), fmt).col_slice(start, end)
                 for r in range(0, n, _COL_CHUNK_ROWS)]
        return QTensor(parts[0].fmt, torch.cat([p.data for p in parts]), end - start)

    # -- helpers --------------------------------------------------------------------------

    def _tensor(self, name: str):
        try:
            return self._tensors[name]
        except KeyError:
            raise ModelError(f"{self.path.name} lacks the tensor {name!r}") from None

    @staticmethod
    def _shape(t) -> tuple[int, ...]:
        return tuple(int(x) for x in reversed(t.shape))  # GGUF lists (cols, rows)

    def _row_index(self, name: str, t) -> np.ndarray:
        """Row order in HF's convention: llama.cpp stores llama's q/k rows permuted."""
        n = self._shape(t)[0]
        idx = np.arange(n)
        if self.arch == "llama" and (".q_proj." in name or ".k_proj." in name):
            heads = self.cfg.num_heads if ".q_proj." in name else self.cfg.num_kv_heads
            idx = unpermute_qk(idx.reshape(n, 1), heads).reshape(n)
        return idx

    @staticmethod
    def _floats(t, raw: np.ndarray) -> torch.Tensor:
        """Rows of `t` as float32: the compiled dequantize for our block formats (the same
        floats as gguf's, ~10x faster), gguf's reference code for every other type."""
        from gguf.quants import dequantize

        from core.kernels import library

        kern = library.kernels()
        fmt = CARRIED.get(int(t.tensor_type))
        if kern and fmt and raw.size:
            data = torch.from_numpy(np.ascontiguousarray(raw))
            n = raw.shape[0] * FORMATS[fmt].values_per_row(raw.shape[-1]) if raw.ndim > 1 \
                else raw.size // FORMATS[fmt].block_bytes * QK
            return kern.dequant(FORMATS[fmt].kernel_id, data, n)
        from gguf import GGMLQuantizationType

        w = dequantize(raw, GGMLQuantizationType(t.tensor_type))  # F32: views of the map
        return torch.from_numpy(np.array(w, dtype=np.float32, copy=True))


def open_weights(model_dir: Path):
    """A WeightReader for a Hugging Face folder, a GgufWeights for an imported GGUF."""
    from core.model.weights import WeightReader

    return GgufWeights(model_dir) if is_gguf_dir(model_dir) else WeightReader(model_dir)
