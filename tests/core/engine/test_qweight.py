"""QWeight: parts gathered from a block, the GEMV and GEMM paths, refusals of bad shapes."""

from __future__ import annotations

import pytest
import torch

from core.engine.qweight import GEMV_MAX_ROWS, QWeight, gather_qweights
from core.errors import ShardError
from core.kernels import library
from core.shard.qformats import FORMATS, quantize
from tests.core.kernels import quant_cases as qc

_KERN = library.kernels()
ROUNDED = _KERN is not None and _KERN.quant_isa in qc.ROUNDED_ISAS


def _block() -> dict:
    torch.manual_seed(0)
    q = quantize(torch.randn(48, 128), FORMATS["q4_1"])
    v = quantize(torch.randn(16, 128), FORMATS["q8_0"])
    return {"norm": torch.ones(128), "wqkv.1.q8_0": v.data, "wqkv.0.q4_1": q.data}, q, v


def test_parts_are_stacked_in_order_and_both_paths_agree():
    block, q, v = _block()
    w = gather_qweights(block)["wqkv"]
    assert isinstance(w, QWeight) and (w.out_features, w.in_features) == (64, 128)
    assert set(block) == {"norm", "wqkv"} and w.nbytes == q.data.nbytes + v.data.nbytes
    full = torch.cat([q.dequantize(), v.dequantize()])  # [64, 128]
    for rows in (1, GEMV_MAX_ROWS + 3):  # the kernel, then dequantize + GEMM
        x = torch.randn(rows, 128)
        # the integer loops round x to int16 per 32-block first (quant_cases.int16_bound):
        # ~4e-4 here on outputs of ~10, where a wrong block would be off by ~1
        tol = 1e-3 if rows <= GEMV_MAX_ROWS and ROUNDED else 1e-5
        torch.testing.assert_close(w.matmul(x), x @ full.t(), rtol=1e-5, atol=tol)
    ids = torch.tensor([3, 0, 47])
    one = gather_qweights({"embed.0.q4_1": q.data})["embed"]
    assert torch.equal(one.rows(ids), q.dequantize()[ids])


def test_inputs_of_another_width_are_refused():
    block, _, _ = _block()
    w = gather_qweights(block)["wqkv"]
    with pytest.raises(ShardError, match="128-wide quantized matrix cannot take 96 inputs"):
        w.matmul(torch.randn(1, 96))


def test_parts_that_disagree_on_the_width_are_refused():
    block, q, _ = _block()
    block["wqkv.1.q8_0"] = quantize(torch.randn(16, 64), FORMATS["q8_0"]).data
    with pytest.raises(ShardError, match="disagree on its width"):
        gather_qweights(block)
