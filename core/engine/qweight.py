"""A block-quantized matrix as the engine multiplies it (core/shard/qformats.py formats).

A shard stores matrix M as parts `M.{i}.{format}`, uint8 [rows_i, row bytes], stacked
row-wise (core/shard/blocks.py). `QWeight` gathers them once per load; `matmul` runs the
compiled kernel per part, each writing its own columns of the output, so a fused matrix
whose parts differ in format still costs one pass over its bytes. Without the compiled
kernels the parts are dequantized and multiplied by torch (slow, but the same numbers up
to the activation rounding the kernel does).
"""

from __future__ import annotations

import torch

from core.errors import ShardError
from core.kernels import library
from core.shard.blocks import parse_part
from core.shard.qformats import FORMATS, QK, QFormat, dequantize

# Up to this many rows (decode, short prompts) the compiled kernel; above, each part is
# dequantized to fp32 in chunks and multiplied by MKL's GEMM, which reuses every weight
# across many rows better than the kernel does.
GEMV_MAX_ROWS = 32  # measured crossover ~35 rows (a 3072x576 Q4_1 matrix, 1 thread)
_CHUNK_FLOATS = 4 << 20  # fp32 weights dequantized at a time (16 MB)


class QWeight:
    """Matrix [out, in] = its parts' rows stacked; x @ M.T via `matmul`."""

    def __init__(self, parts: list[tuple[QFormat, torch.Tensor]], in_features: int):
        self.parts = parts
        self.in_features = in_features
        self.out_features = sum(p.shape[0] for _, p in parts)
        self.nbytes = sum(p.nbytes for _, p in parts)
        self.dtype = torch.uint8  # what block checks that look at `.dtype` see
        self._c_parts = None

    def c_parts(self, out_features: int, in_features: int):
        """The parts as the fused decode kernels take them (library.qparts), after checking
        the shape the caller expects: the kernels trust it to size their reads."""
        if (self.out_features, self.in_features) != (out_features, in_features):
            raise ShardError(f"a quantized matrix is [{self.out_features}, {self.in_features}]"
                             f" where the model needs [{out_features}, {in_features}]; the "
                             "shard is damaged, delete it to re-split")
        if self._c_parts is None:
            self._c_parts = library.qparts([(f.kernel_id, d) for f, d in self.parts])
        return self._c_parts

    def numel(self) -> int:
        return self.out_features * self.in_features

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, in] float32 -> x @ M.T [T, out] float32."""
        if x.shape[1] != self.in_features:  # a shard from a peer may lie about its widths
            raise ShardError(f"a {self.in_features}-wide quantized matrix cannot take "
                             f"{x.shape[1]} inputs; the shard is damaged, delete it to re-split")
        kern = library.kernels()
        out = torch.empty(x.shape[0], self.out_features)
        x = x.contiguous()
        r = 0
        for fmt, data in self.parts:
            n = data.shape[0]
            if kern and x.shape[0] <= GEMV_MAX_ROWS:
                kern.qmatmul(fmt.kernel_id, x, data, out[:, r : r + n])
            else:
                self._gemm(x, fmt, data, out[:, r : r + n])
            r += n
        return out

    def _gemm(self, x: torch.Tensor, fmt: QFormat, data: torch.Tensor, out: torch.Tensor
              ) -> None:
        """out [T, n] = x @ (part dequantized).T, a chunk of rows at a time."""
        kern = library.kernels()
        step = max(1, _CHUNK_FLOATS // max(1, self.in_features))
        for r0 in range(0, data.shape[0], step):
            rows = data[r0 : r0 + step]
            if kern:
                w = kern.dequant(fmt.kernel_id, rows, rows.shape[0] * self.in_features)
                w = w.view(-1, self.in_features)
            else:
                w = dequantize(fmt, rows, self.in_features)
            out[:, r0 : r0 + rows.shape[0]] = x @ w.t()

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` dequantized -> [T, in] float32 (a token embedding lookup)."""
        fmt, data = self.parts[0]
        if len(self.parts) != 1:
            raise ValueError("row lookups need a single-part matrix")
        picked = data[ids].contiguous()
        kern = library.kernels()
        if kern:
            return kern.dequant(fmt.kernel_id, picked, picked.shape[0] * self.in_features
                                ).view(-1, self.in_features)
        return dequantize(fmt, picked, self.in_features)


def gather_qweights(block: dict) -> dict:
    """Replace the `M.{i}.{format}` parts of a block by one QWeight per matrix M."""
    parts: dict[str, list[tuple[int, QFormat, torch.Tensor]]] = {}
    for name in list(block):
        p = parse_part(name)
        if p:
            matrix, index, fmt = p
            parts.setdefault(matrix, []).append((index, FORMATS[fmt], block.pop(name)))
    for matrix, ps in parts.items():
        ps.sort(key=lambda t: t[0])
        # A row of n blocks is n * block_bytes bytes: the width follows from the format.
        widths = {d.shape[1] // f.block_bytes * QK for _, f, d in ps}
        if len(widths) != 1 or any(d.shape[1] % f.block_bytes for _, f, d in ps):
            raise ShardError(f"the parts of matrix {matrix} disagree on its width")
        block[matrix] = QWeight([(f, d) for _, f, d in ps], widths.pop())
    return block
