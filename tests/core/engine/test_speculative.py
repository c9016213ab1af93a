"""Speculative decoding on tiny models: greedy replies token for token the plain ones,
whatever the draft proposes and whatever k; KV reuse across turns still holds."""

from __future__ import annotations

import pytest

from core.engine.generate import Generator
from core.engine.options import RunOptions
from core.engine.sampler import SamplingParams
from core.engine.spec_control import KControl
from core.engine.speculative import Speculator
from core.ranks.local_cluster import LocalCluster
from tests.fixtures.tiny_models import make_tiny_model

PROMPT = [1, 5, 9, 23, 42, 7, 99, 3]
OPTS = RunOptions(context=128, threads=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A target, and a draft of the same shape but other weights (it is often wrong)."""
    target = make_tiny_model(tmp_path_factory.mktemp("target"), "llama", seed=0)
    other = make_tiny_model(tmp_path_factory.mktemp("draft"), "llama", seed=1)
    return target, other


@pytest.fixture(scope="module")
def clusters(models):
    started = [LocalCluster(m, OPTS).start() for m in (*models, models[0])]
    yield started  # target, other draft, the target itself as a draft
    for c in started:
        c.close()


def _greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0, max_new_tokens=n)


def test_greedy_replies_equal_plain_decoding_for_any_draft_and_k(clusters):
    target, other, same = clusters
    plain = Generator(target, {2}).generate(PROMPT, _greedy(40)).token_ids
    assert len(plain) == 40  # no early EOS: the whole reply is compared
    for draft, k in [(other, 1), (other, 3), (same, 4), (same, 12), (other, 7)]:
        spec = Speculator(draft, KControl(fixed=k))
        gen = Generator(target, {2}, speculator=spec)
        r = gen.generate(PROMPT, _greedy(40))
        assert r.token_ids == plain, (k, draft is same)
        assert r.draft_k and all(1 <= x <= k for x in r.draft_k)
        assert all(0 <= a <= x for a, x in zip(r.accepted_per_step, r.draft_k, strict=True))
        if draft is same:  # the target drafting for itself is always right
            assert r.acceptance == 1.0
    # the foreign draft is wrong sometimes: rejections were exercised
    assert Generator(target, {2}, speculator=Speculator(other, KControl(fixed=3))
                     ).generate(PROMPT, _greedy(40)).acceptance < 1.0


def test_follow_up_turn_reuses_the_kv_cache_and_still_matches(clusters):
    target, other, _ = clusters
    plain_gen = Generator(target, {2})
    first = plain_gen.generate(PROMPT, _greedy(10)).token_ids
    follow = PROMPT + first + [11, 12, 13]
    plain_second = plain_gen.generate(follow, _greedy(15)).token_ids

    gen = Generator(target, {2}, speculator=Speculator(other, KControl(fixed=3)))
    assert gen.generate(PROMPT, _greedy(10)).token_ids == first
    r = gen.generate(follow, _greedy(15))
    assert r.token_ids == plain_second
    assert r.reused_tokens >= len(PROMPT) + len(first) - 1


def test_repetition_penalty_and_length_limits_match_plain(clusters):
    target, other, _ = clusters
    params = SamplingParams(temperature=0, repetition_penalty=1.3, max_new_tokens=17)
    plain = Generator(target, {2}).generate(PROMPT, params).token_ids
    r = Generator(target, {2}, speculator=Speculator(other, KControl(fixed=5))
                  ).generate(PROMPT, params)
    assert r.token_ids == plain and len(r.token_ids) == 17


def test_reply_ends_at_eos_inside_a_step(clusters):
    """An EOS among the kept drafts ends the reply there, as plain decoding would."""
    target, _, same = clusters
    plain = Generator(target, {2}).generate(PROMPT, _greedy(30)).token_ids
    eos = plain[6]  # pretend the 7th token is an end of turn
    want = plain[: plain.index(eos) + 1]
    r = Generator(target, {eos}, speculator=Speculator(same, KControl(fixed=8))
                  ).generate(PROMPT, _greedy(30))
    assert r.token_ids == want and r.stop_reason == "eos"


def test_sampling_through_the_accept_reject_rule_with_top_k_one_is_greedy(clusters):
    """top-k 1 makes p and q one-hot: the rule must then reproduce the greedy reply
    exactly (a refused draft is replaced from max(0, p - q), the target's own pick)."""
    target, other, _ = clusters
    plain = Generator(target, {2}).generate(PROMPT, _greedy(20)).token_ids
    params = SamplingParams(temperature=1.3, top_k=1, top_p=0.9, seed=5, max_new_tokens=20)
    r = Generator(target, {2}, speculator=Speculator(other, KControl(fixed=4))
                  ).generate(PROMPT, params)
    assert r.token_ids == plain and r.acceptance < 1.0
