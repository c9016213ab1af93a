"""OpenAI's presence/frequency penalties and logit_bias, applied to the logits between the
model and the engine's sampler, so the engine needs no change for them.

For each token j generated so far in this reply, c[j] times:
    logit[j] -= presence_penalty * (c[j] > 0) + frequency_penalty * c[j]
and logit_bias[j] is added to logit[j] at every step (as OpenAI documents both).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from core.engine.generate import Generator, StepRunner
from core.serve.schemas import Sampling


class AdjustedRunner:
    """A StepRunner whose logits carry this reply's penalties and biases."""

    def __init__(self, runner: StepRunner, sampling: Sampling):
        self.runner = runner
        self.presence = sampling.presence_penalty
        self.frequency = sampling.frequency_penalty
        self.bias = sampling.logit_bias
        self.counts: Counter[int] = Counter()

    @property
    def max_seq(self) -> int:
        return self.runner.max_seq

    def note(self, token: int) -> None:
        """A token was generated (called before the next step)."""
        self.counts[token] += 1

    def step(self, ids: list[int], pos: int, all_logits: bool = False) -> torch.Tensor:
        """The runner's logits, adjusted. With `all_logits` (a speculative step checking
        drafted tokens: ids = [last token, drafts...]) row i also counts the drafts before
        it, as if they had been generated: each row is what a plain step there would see."""
        if not all_logits:
            return self._adjust(self.runner.step(ids, pos).float().clone(), self.counts)
        rows = self.runner.step(ids, pos, all_logits=True).float().clone()
        counts = Counter(self.counts)
        for i in range(rows.shape[0]):
            if i:
                counts[ids[i]] += 1
            rows[i] = self._adjust(rows[i], counts)
        return rows

    def _adjust(self, logits: torch.Tensor, counts: Counter[int]) -> torch.Tensor:
        vocab = logits.shape[-1]
        if self.bias:
            toks = [t for t in self.bias if t < vocab]
            logits[toks] += torch.tensor([self.bias[t] for t in toks])
        if counts:
            toks = list(counts)
            n = torch.tensor([counts[t] for t in toks], dtype=logits.dtype)
            logits[toks] -= self.presence + self.frequency * n
        return logits


def needs_adjusting(sampling: Sampling) -> bool:
    return bool(sampling.presence_penalty or sampling.frequency_penalty or sampling.logit_bias)


@contextmanager
def adjusted(generator: Generator, sampling: Sampling) -> Iterator[AdjustedRunner | None]:
    """The generator steps through an AdjustedRunner for one reply (None when there is
    nothing to adjust); its KV bookkeeping is untouched, since the model is the same.
    A speculative draft is not adjusted: the accept/reject rule keeps the adjusted target
    distribution whatever the draft proposes; only fewer drafts may be kept."""
    if not needs_adjusting(sampling):
        yield None
        return
    runner = generator.runner
    proxy = AdjustedRunner(runner, sampling)
    generator.runner = proxy
    try:
        yield proxy
    finally:
        generator.runner = runner
