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
