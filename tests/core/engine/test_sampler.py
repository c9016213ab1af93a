"""Sampling: greedy, seeds, top-k, top-p and repetition penalty."""

from __future__ import annotations

import pytest
import torch

from core.engine.sampler import Sampler, SamplingParams


def _logits() -> torch.Tensor:
    return torch.tensor([0.0, 3.0, 2.5, 1.0, -1.0])


def test_greedy_takes_argmax():
    assert Sampler(SamplingParams(temperature=0))(_logits(), torch.tensor([])) == 1


def test_same_seed_same_tokens_other_seed_differs():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    none = torch.tensor([], dtype=torch.long)

    def draws(seed: int) -> list[int]:
        s = Sampler(SamplingParams(temperature=1.5, seed=seed))
        return [s(logits, none) for _ in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_top_k_one_is_greedy():
    s = Sampler(SamplingParams(temperature=5.0, top_k=1, seed=0))
    assert {s(_logits(), torch.tensor([], dtype=torch.long)) for _ in range(50)} == {1}


def test_top_p_keeps_only_the_nucleus():
    logits = torch.tensor([10.0, 9.9, -10.0, -10.0])
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.9, seed=0))
    picks = {s(logits, torch.tensor([], dtype=torch.long)) for _ in range(200)}
    assert picks <= {0, 1} and len(picks) == 2


def test_repetition_penalty_demotes_seen_tokens():
    s = Sampler(SamplingParams(temperature=0, repetition_penalty=2.0))
    assert s(_logits(), torch.tensor([1])) == 2  # 3.0/2 < 2.5


def test_bad_params_are_refused():
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)
