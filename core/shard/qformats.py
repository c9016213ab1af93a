"""Block-quantized weight formats a shard can store: llama.cpp's Q8_0, Q4_0 and Q4_1.

Each stores a matrix [out, in] as `out` rows of in/32 blocks, byte for byte as GGML does
(core/kernels/quant.h has the layouts), so GGUF tensors of these types are copied into
shards unchanged and the compiled kernels read them in place. A `QTensor` is such a matrix
in memory: its raw bytes [rows, row_bytes] uint8 plus its format and `in` size.

Quantizing float weights (an HF folder split with `--dtype q4` or `q8`) uses the gguf
package's reference quantizers, which produce llama.cpp's exact bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.errors import ShardError

QK = 32  # weights per block, every format here


@dataclass(frozen=True)
class QFormat:
    """One block format: its name in shards, its id in the C kernels, its block size."""

    name: str
    kernel_id: int  # enum in core/kernels/quant.h
    block_bytes: int
    ggml_type: int  # gguf.GGMLQuantizationType value

    def row_bytes(self, in_features: int) -> int:
        return in_features // QK * self.block_bytes

    def values_per_row(self, row_bytes: int) -> int:
        return row_bytes // self.block_bytes * QK


FORMATS: dict[str, QFormat] = {
    "q8_0": QFormat("q8_0", 0, 34, 8),
    "q4_0": QFormat("q4_0", 1, 18, 2),
    "q4_1": QFormat("q4_1", 2, 20, 3),
}
BY_GGML_TYPE = {f.ggml_type: f for f in FORMATS.values()}


def qformat(name: str) -> QFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ShardError(f"unknown quantized format {name!r}") from None


@dataclass
class QTensor:
    """A block-quantized matrix [rows, in_features]: raw [rows, row_bytes] uint8."""

    fmt: QFormat
    data: torch.Tensor
    in_features: int

    def __post_init__(self) -> None:
        want = (self.data.shape[0], self.fmt.row_bytes(self.in_features))
        if self.data.dtype != torch.uint8 or tuple(self.data.shape) != want:
            raise ShardError(
                f"a {self.fmt.name} matrix of {self.in_features} columns needs {want} bytes, "
                f"got {tuple(self.data.shape)} {self.data.dtype}"
            )

    @property
    def rows(self) -> int:
        return self.data.shape[0]

    def row_slice(self, start: int, end: int) -> QTensor:
        return QTensor(self.fmt, self.data[start:end], self.in_features)

    def col_slice(self, start: int, end: int) -> QTensor:
        """Columns [start, end) of every row; both must fall on block boundaries."""
        check_block_aligned(start, end, f"a {self.fmt.name} matrix")
        b = self.fmt.block_bytes
        part = self.data[:, start // QK * b : end // QK * b].contiguous()
        return QTensor(self.fmt, part, end - start)

    def dequantize(self) -> torch.Tensor:
        """[rows, in_features] float32 (the gguf package's reference; tests, fallbacks)."""
        return dequantize(self.fmt, self.data, self.in_features)


def check_block_aligned(start: int, end: int, what: str) -> None:
    if start % QK or end % QK:
        raise ShardError(
            f"{what} can only be split on {QK}-column block boundaries, not at "
            f"{start}..{end}; this model's shapes need another dtype (int8 or fp32)"
        )


def quantize(w: torch.Tensor, fmt: QFormat) -> QTensor:
    """w [out, in] float -> its blocks in `fmt` (llama.cpp's reference quantizer)."""
    from gguf.quants import quantize as gguf_quantize

    rows, cols = w.shape
    check_block_aligned(0, cols, f"a {fmt.name} matrix")
    raw = gguf_quantize(w.float().numpy(), fmt.ggml_type)
    return QTensor(fmt, torch.from_numpy(np.ascontiguousarray(raw)).view(rows, -1), cols)


def dequantize(fmt: QFormat, data: torch.Tensor, in_features: int) -> torch.Tensor:
    from gguf.quants import dequantize as gguf_dequantize

    out = gguf_dequantize(data.numpy(), fmt.ggml_type)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).view(-1, in_features)


def cat_rows(parts: list[QTensor]) -> QTensor:
    """Stack matrices of one format and width row-wise (q, k and v into wqkv, say)."""
    first = parts[0]
    if any(p.fmt != first.fmt or p.in_features != first.in_features for p in parts):
        raise ShardError("internal error: rows of different formats cannot be stacked")
    return QTensor(first.fmt, torch.cat([p.data for p in parts]), first.in_features)
