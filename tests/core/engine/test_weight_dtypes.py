"""bf16 and int8 shards: bounded error against the fp32 engine, smaller files, same API."""

from __future__ import annotations

import pytest
import torch

from core.kernels import library
from core.model.config import load_config
from core.shard.plan import make_plan
from core.shard.quant import dequantize_int8, quantize_int8
from tests.fixtures.thread_cluster import ThreadCluster
from tests.fixtures.tiny_models import make_tiny_model

# Max abs logit error relative to the largest fp32 logit, measured ~0.5-2% on these models.
REL_BOUND = {torch.bfloat16: 0.05, torch.int8: 0.08}


@pytest.fixture(scope="module", params=["llama", "llama-tied", "qwen2"])
def tiny(request, tmp_path_factory):
    arch, _, tied = request.param.partition("-")
    return make_tiny_model(tmp_path_factory.mktemp(request.param), arch,
                           tie_word_embeddings=bool(tied))


def _logits(model_dir, shares, dtype, out, ids):
    cluster = ThreadCluster(model_dir, make_plan(load_config(model_dir), shares), out, dtype=dtype)
    try:
        pre = cluster.step_all(ids[:10], 0)  # [10, V] batched prefill
        dec = [cluster.step_all([t], p)[0] for p, t in enumerate(ids[10:], start=10)]
        return torch.cat([pre, torch.stack(dec)])
    finally:
        cluster.close()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.int8], ids=str)
@pytest.mark.parametrize("shares", [[1], [1, 1]], ids=str)
def test_logit_error_is_bounded(tiny, shares, dtype, tmp_path):
    _check_bounded_error(tiny, shares, dtype, tmp_path)


def test_int8_with_torch_kernels_alone_is_bounded(tiny, monkeypatch, tmp_path):
    """No compiled kernels (no C compiler): bf16 scales and torch's int8 kernel."""
    monkeypatch.setattr(library, "kernels", lambda: None)
    _check_bounded_error(tiny, [1, 1], torch.int8, tmp_path)


def _check_bounded_error(tiny, shares, dtype, tmp_path) -> None:
    ids = list(range(7, 21))
    want = _logits(tiny, shares, torch.float32, tmp_path / "fp32", ids)
    got = _logits(tiny, shares, dtype, tmp_path / "q", ids)
    err = (got - want).abs().max().item()
    assert err < REL_BOUND[dtype] * want.abs().max().item()
    assert err > 0  # really another dtype, not the fp32 shard again
    agree = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    assert agree >= 0.75


def test_int8_shards_are_about_a_quarter_of_fp32(tiny, tmp_path):
    from core.shard.splitter import split_model

    plan = make_plan(load_config(tiny), [1, 1])
    fp32 = split_model(tiny, plan, tmp_path, torch.float32).bytes_per_rank
    int8 = split_model(tiny, plan, tmp_path, torch.int8).bytes_per_rank
    bf16 = split_model(tiny, plan, tmp_path, torch.bfloat16).bytes_per_rank
    for a, b, h in zip(fp32, int8, bf16, strict=True):
        assert b < 0.4 * a
        assert h < 0.6 * a


def test_quantize_int8_round_trip():
    w = torch.randn(64, 96)
    w[3] = 0  # an all-zero row must survive (no division by zero)
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == (64,)
    err = (dequantize_int8(q, scale) - w).abs()
    assert torch.all(err <= scale[:, None] / 2 + 1e-7)
    assert torch.all(dequantize_int8(q, scale)[3] == 0)
    assert q.abs().max().item() == 127


PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
           "Explain photosynthesis in one sentence.", "List three prime numbers."]


def _greedy(cluster: ThreadCluster, ids: list[int], n: int) -> tuple[list[int], torch.Tensor]:
    logits = cluster.step_all(ids, 0)
    first, out = logits, []
    for i in range(n):
        out.append(int(logits[-1].argmax()))
        logits = cluster.step_all([out[-1]], len(ids) + i)
    return out, first


@pytest.mark.slow
def test_default_model_greedy_tokens_mostly_match_fp32(capsys):
    """Reports, per prompt, how many of the first 16 greedy tokens equal fp32's."""
    from core.model.cache import cache_dir
    from core.model.model_dir import resolve_model
    from core.model.tokenizer import ChatTokenizer

    model_dir = resolve_model(None)
    tok = ChatTokenizer(model_dir)
    plan = make_plan(load_config(model_dir), [1])
    # fp32 on one rank is test_default_model's split: shared in the session's cache
    clusters = {d: ThreadCluster(model_dir, plan, cache_dir() / "shards", dtype=d)
                for d in (torch.float32, torch.bfloat16, torch.int8)}
    try:
        matched = {torch.bfloat16: 0, torch.int8: 0}
        for p in PROMPTS:
            ids = tok.apply_chat([{"role": "user", "content": p}])
            want, want_logits = _greedy(clusters[torch.float32], ids, 16)
            for d in matched:
                got, logits = _greedy(clusters[d], ids, 16)
                same = next((i for i, (a, b) in enumerate(zip(want, got, strict=True))
                             if a != b), 16)
                matched[d] += same
                err = (logits - want_logits).abs().max().item()
                with capsys.disabled():
                    print(f"\n{d}: {same}/16 greedy tokens as fp32, max logit err {err:.3f} "
                          f"({p!r})")
                assert err < REL_BOUND[d] * want_logits.abs().max().item()
        for d, n in matched.items():  # measured: bf16 47/64, int8 58/64
            assert n >= len(PROMPTS) * 16 // 2, f"{d}: only {n} tokens match fp32"
    finally:
        for c in clusters.values():
            c.close()


@pytest.mark.slow
def test_cli_int8_on_worker_processes_streams_the_same_tokens(tmp_path):
    """--dtype reaches the split and the rank processes; streaming int8 blocks changes nothing."""
    from tests.fixtures.cli import run_cli

    tiny = make_tiny_model(tmp_path, "llama")
    runs = [run_cli("generate", "--model", str(tiny), "--ranks", "2", "--dtype", "int8",
                    "--window", w, "--temperature", "0", "--max-new-tokens", "8", "--raw",
                    "--json", "--prompt", "one two three") for w in ("all", "1")]
    assert all(r.code == 0 for r in runs), runs[-1].stderr
    assert runs[0].json()["token_ids"] == runs[1].json()["token_ids"]
    assert len(runs[0].json()["token_ids"]) >= 1
