"""OpenAI's penalty rule on the logits: presence once, frequency per occurrence, bias
always; the generator's own runner is back after the reply."""

from __future__ import annotations

import torch

from core.engine.generate import Generator
from core.serve.penalties import adjusted
from core.serve.schemas import Sampling


class Flat:
    max_seq = 64

    def step(self, ids, pos):
        return torch.zeros(8)


def test_penalties_follow_openais_formula():
    gen = Generator(Flat(), eos_ids={7})
    s = Sampling(presence_penalty=0.5, frequency_penalty=0.25, logit_bias={3: 2.0, 99: 1.0})
    with adjusted(gen, s) as runner:
        assert gen.runner is runner
        for tok in (1, 1, 2):
            runner.note(tok)
        logits = runner.step([2], 3)
    assert gen.runner.__class__ is Flat
    want = torch.zeros(8)
    want[1] = -(0.5 + 0.25 * 2)
    want[2] = -(0.5 + 0.25)
    want[3] = 2.0
    assert torch.equal(logits, want)


def test_nothing_to_adjust_leaves_the_runner_alone():
    gen = Generator(Flat(), eos_ids={7})
    with adjusted(gen, Sampling()) as runner:
        assert runner is None and isinstance(gen.runner, Flat)


class Rows(Flat):
    def step(self, ids, pos, all_logits=False):
        return torch.zeros(len(ids), 8) if all_logits else torch.zeros(8)


def test_a_speculative_check_counts_the_drafts_before_each_row():
    """Row i of a check of [last, d1, d2] is adjusted as a plain step after d1..di."""
    gen = Generator(Rows(), eos_ids={7})
    with adjusted(gen, Sampling(presence_penalty=1.0, frequency_penalty=0.5)) as runner:
        runner.note(4)  # the last token, already generated
        rows = runner.step([4, 5, 5], 10, all_logits=True)
        plain = runner.step([4], 10)
    assert torch.equal(rows[0], plain)
    assert rows[1][5] == -1.5 and rows[2][5] == -2.0 and rows[2][4] == -1.5
    assert runner.counts == {4: 1}  # the drafts are not counted as generated


def test_speculative_replies_with_penalties_equal_plain_ones(tmp_path):
    """Greedy with presence/frequency penalties and a bias: the checked drafts see the
    same adjusted logits plain decoding does, so the reply is the same."""
    from core.engine.options import RunOptions
    from core.engine.sampler import SamplingParams
    from core.engine.spec_control import KControl
    from core.engine.speculative import Speculator
    from core.ranks.local_cluster import LocalCluster
    from tests.fixtures.tiny_models import make_tiny_model

    opts = RunOptions(context=128, threads=1)
    target = LocalCluster(make_tiny_model(tmp_path / "t", "llama", seed=0), opts).start()
    draft = LocalCluster(make_tiny_model(tmp_path / "d", "llama", seed=1), opts).start()
    s = Sampling(presence_penalty=0.6, frequency_penalty=0.4, logit_bias={17: 3.0})
    params = SamplingParams(temperature=0, max_new_tokens=24)
    try:
        def reply(gen: Generator) -> list[int]:
            with adjusted(gen, s) as adj:
                return gen.generate([1, 5, 9, 23], params, on_token=adj.note).token_ids

        plain = reply(Generator(target, {2}))
        spec = reply(Generator(target, {2}, speculator=Speculator(draft, KControl(fixed=4))))
        unadjusted = Generator(target, {2}).generate([1, 5, 9, 23], params).token_ids
    finally:
        target.close()
        draft.close()
    assert spec == plain != unadjusted
