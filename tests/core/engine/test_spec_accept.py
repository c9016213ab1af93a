"""The accept/reject rule keeps the target's distribution: a chi-square test on a toy p/q
with a fixed seed, which the same test shows failing for two plausible wrong rules."""

from __future__ import annotations

import pytest
import torch

from core.engine import spec_accept
from core.engine.spec_accept import accept_greedy, accept_sampled

# Target distributions at draft positions 0, 1 and the bonus position 2, and the draft's q
# at positions 0, 1: deliberately unlike p (some tokens only one of them allows).
P = torch.tensor([[0.40, 0.25, 0.15, 0.10, 0.10, 0.00],
                  [0.05, 0.05, 0.10, 0.20, 0.30, 0.30],
                  [0.30, 0.30, 0.10, 0.10, 0.10, 0.10]])
Q = torch.tensor([[0.10, 0.10, 0.30, 0.30, 0.05, 0.15],
                  [0.30, 0.25, 0.25, 0.10, 0.05, 0.05]])
TRIALS = 8_000
CHI2_999 = {4: 18.47, 5: 20.52}  # 99.9% quantiles: a correct rule fails 1 run in 1000


def _emitted_by_position(seed: int) -> list[torch.Tensor]:
    """Counts of the token emitted at positions 0, 1, 2 over TRIALS two-token steps."""
    gen = torch.Generator().manual_seed(seed)
    counts = [torch.zeros(6) for _ in range(3)]
    for _ in range(TRIALS):
        drafts = [int(torch.multinomial(Q[i], 1, generator=gen)) for i in range(2)]
        out = accept_sampled(drafts, [Q[0], Q[1]], lambda i: P[i], gen)
        assert 1 <= len(out) <= 3
        for pos, tok in enumerate(out):
            counts[pos][tok] += 1
    return counts


def _chi2(counts: torch.Tensor, p: torch.Tensor) -> tuple[float, int]:
    keep = p > 0
    assert counts[~keep].sum() == 0, "a token the target never picks was emitted"
    n = counts.sum()
    exp = p[keep] * n
    return float(((counts[keep] - exp) ** 2 / exp).sum()), int(keep.sum()) - 1


def _fits(counts: list[torch.Tensor]) -> bool:
    ok = True
    for pos in range(3):
        stat, df = _chi2(counts[pos], P[pos])
        ok &= stat < CHI2_999[df]
    return ok


def test_every_emitted_token_follows_the_targets_distribution():
    counts = _emitted_by_position(seed=1234)
    assert counts[1].sum() > 500 and counts[2].sum() > 150  # later positions get data too
    for pos in range(3):  # position 1 and 2 counted over the steps that reached them
        stat, df = _chi2(counts[pos], P[pos])
        assert stat < CHI2_999[df], (pos, stat)


@pytest.mark.parametrize("wrong", ["resample_from_p", "always_accept"])
def test_the_same_check_catches_a_wrong_rule(monkeypatch, wrong):
    if wrong == "resample_from_p":  # refusals drawn from p instead of max(0, p - q)
        monkeypatch.setattr(spec_accept, "_residual", lambda p, q: p)
    else:  # keep every draft: the draft's distribution leaks through
        monkeypatch.setattr(spec_accept.torch, "rand", lambda *a, **k: torch.tensor(0.0))
    with pytest.raises(AssertionError):
        assert _fits(_emitted_by_position(seed=1234))


def test_greedy_keeps_the_agreeing_prefix_then_the_targets_pick():
    picks = [5, 6, 9, 1]  # the target's argmax at positions 0..3
    assert accept_greedy([5, 6, 7], picks.__getitem__) == [5, 6, 9]
    assert accept_greedy([5, 6, 9], picks.__getitem__) == [5, 6, 9, 1]  # bonus
    assert accept_greedy([4, 6, 9], picks.__getitem__) == [5]
