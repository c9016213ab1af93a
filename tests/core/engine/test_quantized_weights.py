"""Block-quantized shards (q8_0, q4_0, q4_1, a GGUF's own mix) through the whole engine.

The reference for a quantized model is transformers running the same weights dequantized:
the float kernels keep activations in float32 (core/kernels/quant.h), so the logits agree up
to float summation order, as the fp32 contract does (1e-4). The integer kernels (AVX-512
VNNI) round each 32-block of activations to int16 first, 2^-16 of its largest value:
measured up to 1.3e-4 on these logits, so they get 5e-4. Splitting over ranks changes
nothing else.
"""

from __future__ import annotations

import pytest
import torch

from core.engine.qweight import GEMV_MAX_ROWS
from core.kernels import library
from core.model.config import load_config
from core.model.gguf_weights import open_weights
from core.shard.plan import make_plan
from tests.core.kernels import quant_cases as qc
from tests.fixtures.thread_cluster import ThreadCluster

_KERN = library.kernels()
TOL = 5e-4 if _KERN and _KERN.quant_isa in qc.ROUNDED_ISAS else 1e-4
IDS = list(range(7, 47))  # 40 tokens: a prefill above GEMV_MAX_ROWS, then decode steps


def _logits(model_dir, shares, dtype, out):
    cluster = ThreadCluster(model_dir, make_plan(load_config(model_dir), shares), out,
                            dtype=dtype)
    try:
        n = GEMV_MAX_ROWS + 4
        pre = cluster.step_all(IDS[:n], 0)  # dequantize + GEMM
        dec = [cluster.step_all([t], p)[0] for p, t in enumerate(IDS[n:], start=n)]  # kernel
        return torch.cat([pre, torch.stack(dec)])
    finally:
        cluster.close()


def _reference(model_dir) -> torch.Tensor:
    """transformers on the weights our shards hold, dequantized to fp32."""
    from core.model.reference import transformers_model

    with torch.no_grad():
        return transformers_model(model_dir)(torch.tensor([IDS])).logits[0]


def _check_close(got: torch.Tensor, want: torch.Tensor, bound: float, agree: float = 0.8
                 ) -> None:
    err = (got - want).abs().max().item()
    assert 0 < err < bound * want.abs().max().item()
    assert (got.argmax(-1) == want.argmax(-1)).float().mean().item() >= agree


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0", "q4_1"])
def test_gguf_blocks_run_close_to_transformers_on_the_same_weights(gguf_models, dtype, tmp_path):
    model = gguf_models[dtype]
    one = _logits(model, [1], "auto", tmp_path / "1")
    two = _logits(model, [1, 1], "auto", tmp_path / "2")
    torch.testing.assert_close(one, two, rtol=TOL, atol=TOL)  # ranks: summation order only
    torch.testing.assert_close(one, _reference(model), rtol=TOL, atol=TOL)


def test_a_q4_k_m_style_mix_runs(gguf_models, tmp_path):
    """Q4_K regrouped to Q4_1 beside requantized v/down: fused wqkv holds two formats. The
    reference runs the file's own weights, so the conversion's rounding shows, a little."""
    model = gguf_models["mixed"]
    got = _logits(model, [3, 1], "auto", tmp_path / "m")
    _check_close(got, _reference(model), 0.05)


@pytest.mark.parametrize("dtype", ["q8_0", "q4_1"])
def test_hf_folders_quantize_at_split_time(hf_model, dtype, tmp_path):
    want = _logits(hf_model, [1], "float32", tmp_path / "f")
    got = _logits(hf_model, [1, 1], dtype, tmp_path / "q")
    # 4 bits on random weights (near-flat logits): the weights' own rounding, measured ~19%
    # of the top logit and 70% of the argmaxes kept
    if dtype == "q8_0":
        _check_close(got, want, 0.05)
    else:
        _check_close(got, want, 0.3, agree=0.55)


def test_without_compiled_kernels_the_same_numbers_come_from_torch(gguf_models, monkeypatch,
                                                                   tmp_path):
    model = gguf_models["q4_1"]
    with_kernels = _logits(model, [1], "auto", tmp_path / "k")
    monkeypatch.setattr(library, "kernels", lambda: None)
    without = _logits(model, [1], "auto", tmp_path / "t")
    torch.testing.assert_close(with_kernels, without, rtol=TOL, atol=TOL)


def test_gguf_weights_read_back_the_files_tensors(gguf_models, hf_model):
    """Float reads of a quantized GGUF are gguf's dequantization, in HF's row order."""
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize, quantize
    from safetensors.numpy import load_file

    ref = load_file(str(hf_model / "model.safetensors"))
    name = "model.layers.1.self_attn.q_proj.weight"
    with open_weights(gguf_models["q8_0"]) as w:
        got = w.get(name).numpy()
    want = dequantize(quantize(ref[name], T.Q8_0), T.Q8_0)
    assert (got == want).all()
