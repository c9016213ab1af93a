"""The correctness contract on the embedded default model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import pytest
import torch

from core.model.cache import cache_dir
from core.model.config import load_config
from core.model.model_dir import resolve_model
from core.model.tokenizer import ChatTokenizer
from core.shard.plan import make_plan
from tests.fixtures.cli import run_cli
from tests.fixtures.kernel_cache import seed_kernels
from tests.fixtures.thread_cluster import ThreadCluster
from tests.fixtures.tiny_models import load_hf_model

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def default_model():
    model_dir = resolve_model(None)
    ids = ChatTokenizer(model_dir).apply_chat(QUESTION)
    ref = load_hf_model(model_dir)
    with torch.no_grad():
        logits = ref(torch.tensor([ids])).logits[0]
        greedy = ref.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
    del ref
    return model_dir, ids, logits, greedy[0, len(ids):].tolist()


@pytest.mark.parametrize("shares", [[1], [1, 1], [3, 1], [1, 1, 1], [2, 1, 1, 1]], ids=str)
def test_logits_equal_transformers(default_model, shares):
    model_dir, ids, want, _ = default_model
    # Split where the CLI splits (the session's cache; splits are keyed by model, plan and
    # dtype, and only read): the 3-rank run below and test_weight_dtypes reuse these.
    cluster = ThreadCluster(model_dir, make_plan(load_config(model_dir), shares),
                            cache_dir() / "shards")
    try:
        got = cluster.step_all(ids, 0)
        assert (got - want).abs().max().item() < 1e-4
    finally:
        cluster.close()


def test_three_rank_greedy_equals_transformers_and_says_paris(default_model):
    model_dir, ids, _, want = default_model
    run = run_cli("generate", "--ranks", "3", "--dtype", "fp32", "--temperature", "0",
                  "--max-new-tokens", "32", "--json", "--prompt", QUESTION[0]["content"])
    assert run.code == 0, run.stderr
    out = run.json()
    eos = ChatTokenizer(model_dir).eos_ids
    n = len(out["token_ids"])
    assert out["token_ids"] == want[:n]  # ours stops at EOS, HF pads after it
    assert n == 32 or out["token_ids"][-1] in eos
    assert "Paris" in out["text"]


def test_kept_quantized_two_ranks_write_little_and_say_paris(tmp_path, built_kernels):
    """The GGUF's own Q4_1/Q8_0 blocks go to the shards: a fresh cache holds about the
    file's size (it held 11x, fp32 model dir plus fp32 shards), and the answer holds."""
    from core.model.default_model import default_gguf_path

    cache = tmp_path / "cache"
    seed_kernels(cache, built_kernels)  # fresh for the model; the kernels are not the point
    run = run_cli("generate", "--ranks", "2", "--temperature", "0", "--max-new-tokens", "16",
                  "--json", "--prompt", QUESTION[0]["content"], env={"TPI_CHAT_CACHE": str(cache)})
    assert run.code == 0, run.stderr
    assert "Paris" in run.json()["text"]
    written = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    size = default_gguf_path().stat().st_size
    assert written <= 1.5 * size, f"{written / size:.2f}x the GGUF written to the cache"
    assert len(list(cache.glob("shards/*-gguf/rank*/manifest.json"))) == 2
