"""Turning logits into the next token: greedy, temperature, top-k, top-p, repetition penalty.

Runs on rank 0 only: the prompt and the chosen tokens never leave the user's machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    """How to pick tokens. temperature 0 means greedy (and ignores top-k/top-p/seed)."""

    temperature: float = 0.7
    top_k: int = 0  # 0 = no limit
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    max_new_tokens: int = 256

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be 0 (greedy) or more")
        if not 0 < self.top_p <= 1:
            raise ValueError("top-p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top-k must be 0 (off) or more")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition penalty must be positive")
        if self.max_new_tokens < 1:
            raise ValueError("max new tokens must be at least 1")


class Sampler:
    """Stateful only in its random generator, so a seed reproduces a whole reply."""

    def __init__(self, params: SamplingParams):
        self.p = params
        self.gen = torch.Generator()
        if params.seed is not None:
            self.gen.manual_seed(params.seed)
        else:
            self.gen.seed()

    @property
    def greedy(self) -> bool:
        return self.p.temperature == 0

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor) -> int:
        """logits [V] of the last position; seen [n] int64 ids of prompt + reply so far."""
        if self.greedy:
            return self.argmax(logits, seen)
        return self.draw(self.probs(logits, seen))

    def argmax(self, logits: torch.Tensor, seen: torch.Tensor) -> int:
        """The greedy pick: the best token after the repetition penalty."""
        return int(torch.argmax(self.penalised(logits, seen)))

    def penalised(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.p.repetition_penalty != 1.0 and seen.numel():
            logits = _penalise(logits, seen, self.p.repetition_penalty)
        return logits

    def probs(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """The distribution a token is drawn from (temperature > 0): penalty, temperature,
        top-k, top-p. Speculative decoding compares the target's and the draft's through
        this one function, so every setting shapes both alike."""
        logits = self.penalised(logits, seen) / self.p.temperature
        if self.p.top_k:
            kth = torch.topk(logits, min(self.p.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if self.p.top_p < 1.0:
            probs = _nucleus(probs, self.p.top_p)
        return probs

    def draw(self, probs: torch.Tensor) -> int:
        """One token from `probs` (need not sum to 1), with this sampler's generator."""
        return int(torch.multinomial(probs, 1, generator=self.gen))


def _penalise(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """HF's rule: seen tokens' positive logits divided by the penalty, negative multiplied."""
    logits = logits.clone()
    vals = logits[seen]
    logits[seen] = torch.where(vals < 0, vals * penalty, vals / penalty)
    return logits


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (always at least one)."""
    sorted_p, idx = torch.sort(probs, descending=True)
    cum = torch.cumsum(sorted_p, dim=-1)
    drop = cum - sorted_p > top_p
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    out = torch.zeros_like(probs).scatter_(0, idx, sorted_p)
    return out / out.sum()
