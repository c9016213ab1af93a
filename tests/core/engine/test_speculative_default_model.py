"""Speculative decoding on the default model, 2 ranks, 5 ms emulated per send: the same
greedy reply as plain decoding, drafted steps, and faster (issue 14's judged point; the
benchmark measures the ratio, this only that it clearly goes the right way)."""

from __future__ import annotations

import pytest

from core.cluster.open_model import open_model
from core.engine.generate import Generator
from core.engine.options import RunOptions
from core.engine.sampler import SamplingParams
from core.ranks.draft import start_speculator
from core.ranks.local_cluster import LocalCluster

pytestmark = pytest.mark.slow


def test_two_ranks_over_a_slow_link_speculate_with_the_plain_reply():
    model_dir, tok = open_model(None, lambda *a: None)
    opts = RunOptions(ranks=2, link_delay_ms=5.0, context=512, speculate="auto")
    cluster = LocalCluster(model_dir, opts).start()
    spec = None
    try:
        spec = start_speculator(model_dir, tok, opts, cluster.world_size)
        assert spec is not None
        ids = tok.apply_chat([{"role": "user", "content": "Tell me a story about a dragon."}],
                             add_generation_prompt=True)
        params = SamplingParams(temperature=0, max_new_tokens=16)
        plain = Generator(cluster, tok.eos_ids).generate(ids, params)
        fast = Generator(cluster, tok.eos_ids, speculator=spec).generate(ids, params)
    finally:
        cluster.close()
        if spec is not None:
            spec.close()
    assert fast.token_ids == plain.token_ids and len(plain.token_ids) == 16
    assert fast.draft_k and fast.acceptance > 0.5
    # at 5 ms per send a plain token waits ~60 round trips; a checked step of k pays them once
    assert fast.decode_ms_per_token < 0.8 * plain.decode_ms_per_token
