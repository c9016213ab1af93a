"""llama.cpp's perplexity method: windows, NLL, and the engine's all-position logits."""

from __future__ import annotations

import math

import pytest
import torch

from core.engine import perplexity as ppl
from core.engine.options import RunOptions
from core.errors import TpiError
from core.model.tokenizer import ChatTokenizer
from core.ranks.local_cluster import LocalCluster
from tests.fixtures.hf_perplexity import hf_perplexity, sample_text
from tests.fixtures.tiny_models import make_tiny_model

# --- windows ---------------------------------------------------------------------------


def test_windows_are_consecutive_and_the_tail_is_dropped():
    tokens = list(range(10, 33))  # 23 tokens, context 6: 3 windows, 5 left over
    assert ppl.windows(tokens, 6, None) == [list(range(10, 16)), list(range(16, 22)),
                                            list(range(22, 28))]


def test_bos_replaces_the_first_token_of_every_window():
    tokens = ppl.text_tokens(list(range(10, 22)), bos_id=1)  # BOS + 12 ids
    assert tokens[:2] == [1, 10]
    # the token a window's BOS replaces (15, then 20) is lost, as in llama.cpp
    assert ppl.windows(tokens, 5, 1) == [[1, 10, 11, 12, 13], [1, 15, 16, 17, 18]]
    assert tokens[5] == 14  # the caller's list is left alone


def test_no_bos_when_the_model_adds_none():
    assert ppl.text_tokens([5, 6], None) == [5, 6]


def test_fewer_than_two_windows_of_tokens_is_refused():
    with pytest.raises(TpiError, match="11 tokens long.*at least 12"):
        ppl.windows(list(range(11)), 6, None)
    assert len(ppl.windows(list(range(12)), 6, None)) == 2


@pytest.mark.parametrize("context", [0, 2])
def test_a_window_too_short_to_score_anything_is_refused(context):
    with pytest.raises(TpiError, match="at least 3"):
        ppl.check_context(context)
    with pytest.raises(TpiError, match="at least 3"):
        ppl.windows(list(range(100)), context, None)


def test_a_window_longer_than_the_model_context_is_refused():
    ppl.check_context(256, 256)
    with pytest.raises(TpiError, match="larger than the model's context of 256"):
        ppl.check_context(257, 256)


@pytest.mark.parametrize(("context", "scored"), [(512, range(257, 512)), (7, range(4, 7)),
                                                 (3, range(2, 3))])
def test_the_tokens_after_the_middle_are_scored(context, scored):
    assert ppl.scored_positions(context) == scored


# --- NLL against a hand computation ----------------------------------------------------

# A bigram "model" over 3 token ids: row = previous token, column = next.
BIGRAM = [[0.5, 0.25, 0.25],
          [0.1, 0.6, 0.3],
          [0.2, 0.2, 0.6]]


class BigramStep:
    """A step-like callable: logits [T, 3] whose softmax is BIGRAM[previous token]; keeps
    every call so the test sees what the engine was asked."""

    def __init__(self):
        self.calls: list[tuple[list[int], int, bool]] = []

    def __call__(self, ids, pos, all_logits=False):
        self.calls.append((list(ids), pos, all_logits))
        rows = torch.tensor([BIGRAM[t] for t in ids], dtype=torch.float64).log() + 3.0
        # (+3: logits are log-probabilities up to a shift)
        return rows if all_logits else rows[-1]


def test_score_matches_a_hand_computation():
    tokens = [0, 1, 1, 2, 2, 0, 2, 2, 1, 1, 0, 0, 1]  # 13 tokens, context 6 -> 2 windows
    step = BigramStep()
    seen = []
    run = ppl.score(step, ppl.windows(tokens, 6, None),
                    on_window=lambda r, n: seen.append((r.windows, r.tokens, n)))
    # window [0 1 1 2 2 0] scores positions 4, 5: 2 after 2, 0 after 2
    # window [2 2 1 1 0 0] scores positions 4, 5: 0 after 1, 0 after 0
    nll = [-math.log(0.6), -math.log(0.2), -math.log(0.1), -math.log(0.5)]
    assert run.tokens == 4 and run.windows == 2
    assert run.mean_nll == pytest.approx(sum(nll) / 4, rel=1e-12)
    assert run.perplexity == pytest.approx(math.exp(sum(nll) / 4), rel=1e-12)
    mean, sq = sum(nll) / 4, sum(x * x for x in nll) / 4
    assert run.perplexity_error == pytest.approx(
        math.sqrt((sq - mean * mean) / 3) * run.perplexity, rel=1e-9)
    assert [c[1:] for c in step.calls] == [(0, True), (0, True)]  # fresh, every position
    assert seen == [(1, 2, 2), (2, 4, 2)]


def test_score_with_bos_feeds_the_replaced_windows():
    step = BigramStep()
    tokens = ppl.text_tokens([2, 2, 2, 2, 2, 2, 2, 2, 2], bos_id=0)  # 10 tokens, 2 windows
    run = ppl.score(step, ppl.windows(tokens, 5, 0))
    assert [c[0] for c in step.calls] == [[0, 2, 2, 2, 2], [0, 2, 2, 2, 2]]
    # positions 3, 4 scored: 2 after 2 twice, each window
    assert run.perplexity == pytest.approx(1 / 0.6, rel=1e-12)


def test_log_softmax_keeps_its_digits_on_large_logits():
    """Logits of 200 in float32: exp() of them overflows, a naive softmax gives nan."""
    window = [0, 1, 2, 3]  # context 4: row 2 predicts token 3, the only one scored
    logits = torch.full((4, 4), 200.0)
    logits[2, 3] += math.log(3.0)  # p(3 | row 2) = 3 / (3 + 1 + 1 + 1)
    nll, _, count = ppl.window_nll(logits, window)
    assert count == 1 and nll == pytest.approx(math.log(2.0), abs=1e-4)


def test_logits_of_the_wrong_length_are_a_bug_not_a_number():
    with pytest.raises(ValueError):
        ppl.window_nll(torch.zeros(5, 4), [0, 1, 2, 3])


# --- the engine --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("ppl-llama"), "llama")


@pytest.fixture(scope="module")
def cluster(tiny):
    c = LocalCluster(tiny, RunOptions(ranks=1, context=128, dtype="fp32")).start()
    yield c
    c.close()


def test_all_logits_equal_each_prefix_run_alone(cluster):
    ids = list(range(3, 40))
    every = cluster.step(ids, 0, all_logits=True)
    assert every.shape == (len(ids), 512)
    for t in range(1, len(ids) + 1):  # prefix ids[:t] from position 0: logits of its last
        alone = cluster.step(ids[:t], 0)
        assert alone.shape == (512,)
        assert torch.allclose(every[t - 1], alone, atol=1e-5, rtol=0), t
    assert not torch.allclose(every[0], every[1], atol=1e-3)  # rows really differ


def test_a_step_at_position_zero_forgets_the_previous_window(cluster):
    b = list(range(100, 120))
    first = cluster.step(b, 0, all_logits=True)
    cluster.step(list(range(200, 260)), 0, all_logits=True)  # longer: fills past b's end
    again = cluster.step(b, 0, all_logits=True)
    assert torch.equal(first, again)


@pytest.mark.slow
def test_perplexity_equals_transformers_on_the_same_windows(tiny, cluster):
    tok = ChatTokenizer(tiny)
    tokens = ppl.text_tokens(tok.encode(sample_text()), None)
    chunks = ppl.windows(tokens, 64, None)
    assert len(chunks) >= 3
    run = ppl.score(cluster.step, chunks)
    want, count = hf_perplexity(tiny, tokens, 64)
    assert run.tokens == count == len(chunks) * 31
    assert run.perplexity == pytest.approx(want, rel=1e-4)
    assert 10 < run.perplexity < 1000  # a random model over 512 ids: not degenerate


@pytest.mark.slow
def test_perplexity_with_bos_equals_transformers(tiny, cluster):
    tok = ChatTokenizer(tiny)
    tokens = ppl.text_tokens(tok.encode(sample_text(1500)), bos_id=1)
    run = ppl.score(cluster.step, ppl.windows(tokens, 48, 1))
    want, count = hf_perplexity(tiny, tokens, 48, bos_id=1)
    assert run.tokens == count
    assert run.perplexity == pytest.approx(want, rel=1e-4)
