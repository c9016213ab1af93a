"""The correctness contract: TP logits equal transformers' forward, for any split."""

from __future__ import annotations

import pytest
import torch

from core.kernels import library
from core.model.config import load_config
from core.shard.plan import Plan, RankShare, make_plan
from tests.fixtures.thread_cluster import ThreadCluster
from tests.fixtures.tiny_models import load_hf_model, make_tiny_model

TOL = 1e-4


@pytest.fixture(scope="module", params=["llama", "llama-tied", "qwen2", "qwen3"])
def tiny(request, tmp_path_factory):
    arch, _, tied = request.param.partition("-")
    d = make_tiny_model(tmp_path_factory.mktemp(request.param), arch,
                        tie_word_embeddings=bool(tied))
    return d, load_hf_model(d)


def _zero_head_plan(cfg) -> Plan:
    """Rank 1 holds no attention at all but a share of the MLP."""
    c = cfg.intermediate_size
    return Plan(
        ranks=(RankShare(0, 0, cfg.num_kv_heads, 0, c // 3),
               RankShare(1, cfg.num_kv_heads, cfg.num_kv_heads, c // 3, c)),
        shares=(1.0, 1.0),
    )


SPLITS = [[1], [1, 1], [3, 1], [1, 1, 1], [2, 1, 1, 1], "zero-heads"]


@pytest.mark.parametrize("shares", SPLITS, ids=str)
def test_prefill_and_decode_logits_match_transformers(tiny, shares, tmp_path):
    model_dir, ref = tiny
    cfg = load_config(model_dir)
    plan = _zero_head_plan(cfg) if shares == "zero-heads" else make_plan(cfg, shares)
    _check_against_transformers(model_dir, ref, plan, tmp_path)


def test_torch_kernels_alone_match_transformers(tiny, monkeypatch, tmp_path):
    """The path taken where the compiled kernels cannot be built (no C compiler)."""
    monkeypatch.setattr(library, "kernels", lambda: None)
    model_dir, ref = tiny
    _check_against_transformers(model_dir, ref, make_plan(load_config(model_dir), [1, 1]),
                                tmp_path)


def _check_against_transformers(model_dir, ref, plan: Plan, tmp_path) -> None:
    cfg = load_config(model_dir)
    cluster = ThreadCluster(model_dir, plan, tmp_path)
    try:
        ids = torch.randint(3, cfg.vocab_size, (14,), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = ref(ids[None]).logits[0]  # [14, V]
        got = cluster.step_all(ids[:10].tolist(), 0)  # batched prefill
        assert (got - want[:10]).abs().max().item() < TOL
        for p in range(10, 14):  # decode one token at a time on the KV cache
            got = cluster.step_all([int(ids[p])], p)
            assert (got[0] - want[p]).abs().max().item() < TOL
    finally:
        cluster.close()


@pytest.mark.parametrize("window", [1, 2, 3])
def test_windowed_scheduling_gives_the_same_logits(tiny, window, tmp_path):
    model_dir, ref = tiny
    cfg = load_config(model_dir)
    ids = list(range(5, 17))
    full = ThreadCluster(model_dir, make_plan(cfg, [1, 1]), tmp_path / "a")
    windowed = ThreadCluster(model_dir, make_plan(cfg, [1, 1]), tmp_path / "b", window=window)
    try:
        a = full.step_all(ids, 0)
        b = windowed.step_all(ids, 0)
        assert torch.equal(a, b)
        for r in windowed.ranks:
            assert r.scheduler.stats.peak_blocks <= window
    finally:
        full.close()
        windowed.close()


def test_evicting_streamed_blocks_gives_the_same_logits(tiny, tmp_path):
    """Window 2 with every used block dropped from the page cache (the cold-read mode)."""
    model_dir, ref = tiny
    cfg = load_config(model_dir)
    ids = list(range(5, 17))
    full = ThreadCluster(model_dir, make_plan(cfg, [1, 1]), tmp_path / "a")
    cold = ThreadCluster(model_dir, make_plan(cfg, [1, 1]), tmp_path / "b", window=2,
                         evict_streamed=True)
    try:
        assert torch.equal(full.step_all(ids, 0), cold.step_all(ids, 0))
        assert torch.equal(full.step([3], len(ids)), cold.step([3], len(ids)))
        assert all(r.scheduler.stats.loads > 2 * cfg.num_layers for r in cold.ranks)
    finally:
        full.close()
        cold.close()


def test_prefill_in_chunks_equals_one_prefill(tiny, tmp_path):
    """A follow-up turn appends to the cache: chunked feeding must not change logits."""
    model_dir, _ = tiny
    cfg = load_config(model_dir)
    cluster = ThreadCluster(model_dir, make_plan(cfg, [1, 2]), tmp_path)
    try:
        ids = list(range(20, 36))
        whole = cluster.step_all(ids, 0)
        cluster.step_all(ids[:6], 0)
        cluster.step_all(ids[6:11], 6)
        tail = cluster.step_all(ids[11:], 11)
        assert (tail - whole[11:]).abs().max().item() < TOL
    finally:
        cluster.close()
