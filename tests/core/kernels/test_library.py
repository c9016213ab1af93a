"""The compiled kernels against torch's own ops, on shapes with vector-loop tails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.engine.rope import apply_rope
from core.kernels import library
from core.shard.quant import dequantize_int8, quantize_int8
from tests.fixtures.kernel_cache import seed_kernels

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler here")


@pytest.fixture(scope="module")
def k() -> library.Kernels:
    got = library.kernels()
    if got is None and shutil.which("cc") is not None:
        pytest.fail("a C compiler is here but the kernels did not load (see the log)")
    if got is None:
        pytest.skip("no C compiler here")
    return got


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@needs_cc
def test_kernels_share_torchs_openmp_runtime(k):
    """A second libgomp would run its own thread pool, fighting torch's for the cores."""
    maps = Path("/proc/self/maps").read_text()
    assert len(set(re.findall(r"\S*libgomp[^/\s]*\.so\S*", maps))) == 1


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("K,N", [(64, 96), (576, 960), (37, 1001), (5, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_matvec_matches_torch_in_fp32(k, K, N, threads, dtype):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, w = torch.randn(1, K, generator=_gen()), torch.randn(K, N, generator=_gen(1))
        w = w.to(dtype)
        want = x @ w.float()  # the weights as stored, widened exactly; fp32 products
        assert torch.allclose(k.matvec(x, w), want, atol=1e-4, rtol=1e-4)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("M,K,N", [(1, 576, 960), (3, 64, 96), (1, 37, 1001), (16, 19, 7)])
def test_matmul_i8_matches_dequantized_product(k, M, K, N, threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        q, scale = quantize_int8(torch.randn(N, K, generator=_gen(2)))
        x = torch.randn(M, K, generator=_gen(3))
        want = x @ dequantize_int8(q, scale).t()
        assert torch.allclose(k.matmul_i8(x, q, scale), want, atol=1e-4, rtol=1e-4)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("T,D", [(1, 576), (4, 37)])
def test_rms_norm_matches_hugging_faces_formula(k, T, D):
    x, w = torch.randn(T, D, generator=_gen(4)) * 3, torch.rand(D, generator=_gen(5))
    want = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    assert torch.allclose(k.rms_norm(x, w, 1e-5), want, atol=1e-5, rtol=1e-5)


def test_silu_mul_matches_torch(k):
    gu = torch.randn(3, 2 * 41, generator=_gen(6)) * 4
    gate, up = gu.chunk(2, dim=-1)
    assert torch.allclose(k.silu_mul(gu), F.silu(gate) * up, atol=1e-5, rtol=1e-5)


def test_float16_weights_widen_exactly_including_subnormals_and_inf(k):
    halves = torch.arange(0, 1 << 16, dtype=torch.int32).to(torch.int16).view(torch.float16)
    finite = halves[torch.isfinite(halves)]  # every finite half, subnormals included
    w = finite[:, None]  # [K, 1]: y = sum_k x_k w_k; one 1 in x picks one weight
    for i in torch.randint(0, finite.numel(), (64,), generator=_gen(8)).tolist():
        x = torch.zeros(1, finite.numel())
        x[0, i] = 1.0
        assert k.matvec(x, w).item() == finite[i].item()
    inf = torch.tensor([[float("inf")]], dtype=torch.float16)
    assert k.matvec(torch.ones(1, 1), inf).item() == float("inf")


@pytest.mark.parametrize("n_q,n_kv,pos", [(9, 3, 0), (4, 4, 5), (8, 2, 300)])
def test_attend_one_matches_torch_attention(k, n_q, n_kv, pos):
    hd, max_seq = 16, 512
    g = _gen(7)
    k_cache, v_cache = torch.randn(n_kv, max_seq, hd, generator=g), torch.randn(
        n_kv, max_seq, hd, generator=g)
    qkv = torch.randn(1, (n_q + 2 * n_kv) * hd, generator=g)
    cos, sin = torch.randn(hd, generator=g), torch.randn(hd, generator=g)

    qk = apply_rope(qkv[0, : (n_q + n_kv) * hd].view(n_q + n_kv, hd), cos, sin)
    q, key = qk[:n_q], qk[n_q:]
    v = qkv[0, (n_q + n_kv) * hd :].view(n_kv, hd)
    keys = torch.cat([k_cache[:, :pos], key[:, None]], dim=1)  # [n_kv, pos+1, hd]
    values = torch.cat([v_cache[:, :pos], v[:, None]], dim=1)
    want = F.scaled_dot_product_attention(q[None, :, None], keys[None], values[None],
                                          enable_gqa=n_q != n_kv)[0, :, 0].reshape(1, -1)

    got = k.attend_one(qkv, cos, sin, k_cache, v_cache, pos, n_q)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)
    assert torch.allclose(k_cache[:, pos], key, atol=1e-6) and torch.equal(v_cache[:, pos], v)


CHECK_EVERY_LOOP = """
import torch
from core.kernels.library import kernels
from core.shard.quant import dequantize_int8, quantize_int8
k = kernels()
g = torch.Generator().manual_seed(0)
for M, K, N in [(1, 576, 960), (3, 100, 37), (1, 7, 5)]:
    q, s = quantize_int8(torch.randn(N, K, generator=g))
    x = torch.randn(M, K, generator=g)
    err = (k.matmul_i8(x, q, s) - x @ dequantize_int8(q, s).t()).abs().max().item()
    assert err < 1e-4, (M, K, N, err)
print(k.level)
"""


@needs_cc
@pytest.mark.parametrize("isa,level", [("avx2", "AVX2"), ("plain", "plain C")])
def test_each_int8_loop_is_right_where_the_cpu_has_it(isa, level, tmp_path, built_kernels):
    """The loops a CPU without AVX-512 (or without AVX2) runs, forced on this one."""
    if isa == "avx2" and "avx2" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("this CPU has no AVX2")
    # One library picks its loops at run time, so the session's build serves every ISA
    seed_kernels(tmp_path, built_kernels)
    env = dict(os.environ, TPI_CHAT_KERNEL_ISA=isa, TPI_CHAT_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", CHECK_EVERY_LOOP], env=env, text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == level
