"""Which drafted tokens the target keeps: the rule that makes speculative decoding exact.

Greedy: a draft token is kept while it is the target's own argmax; the first that is not
is replaced by the target's choice, and when all k are kept the target's next choice
comes free (the bonus token). The reply is token for token the one plain decoding gives.

Sampling (Leviathan et al. 2023, Chen et al. 2023): draft token d drawn from q is kept
with probability min(1, p(d) / q(d)); the first one refused is replaced by a draw from
norm(max(0, p - q)), and when all are kept a bonus token is drawn from the target's next
p. Each emitted token is then distributed exactly as the target alone would draw it.
p and q are the distributions the sampler would draw from (core/engine/sampler.py
`Sampler.probs`: penalty, temperature, top-k, top-p applied to both alike).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# p_at(i): the target's distribution (or, greedy, its pick) after the drafts before i
ProbsAt = Callable[[int], torch.Tensor]


def accept_greedy(drafts: list[int], pick_at: Callable[[int], int]) -> list[int]:
    """The tokens to emit: the drafts the target agrees with, then the target's own next
    pick (a correction, or the bonus after all k). `pick_at(i)` is the target's greedy
    token at draft position i (i = len(drafts): the one after the last draft)."""
    out: list[int] = []
    for i, d in enumerate(drafts):
        t = pick_at(i)
        if t != d:
            return out + [t]
        out.append(d)
    return out + [pick_at(len(drafts))]


def accept_sampled(drafts: list[int], q: list[torch.Tensor], p_at: ProbsAt,
                   gen: torch.Generator) -> list[int]:
    """The tokens to emit under the accept/reject rule: drafts[i] was drawn from q[i];
    `p_at(i)` is the target's distribution at draft position i (0..len(drafts))."""
    out: list[int] = []
    for i, d in enumerate(drafts):
        p = p_at(i)
        r = float(torch.rand((), generator=gen))
        if r * float(q[i][d]) < float(p[d]):  # r < p/q without dividing by a tiny q
            out.append(d)
            continue
        return out + [_draw(_residual(p, q[i]), gen)]
    return out + [_draw(p_at(len(drafts)), gen)]


def _residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """max(0, p - q); where rounding leaves nothing (p == q almost everywhere, so a
    refusal was all but impossible), p itself."""
    res = (p - q).clamp_min(0)
    return res if float(res.sum()) > 1e-12 else p


def _draw(probs: torch.Tensor, gen: torch.Generator) -> int:
    return int(torch.multinomial(probs, 1, generator=gen))
