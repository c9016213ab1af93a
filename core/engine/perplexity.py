"""Perplexity of a text the way llama.cpp's `llama-perplexity` measures it, as pure maths.

    tokens = text_tokens(ids, bos_id)              # BOS first when the model adds one
    chunks = windows(tokens, 512, bos_id)          # consecutive, non-overlapping
    result = score(step, chunks, on_window=show)   # step(ids, 0, all_logits=True)
    result.perplexity

The rules, copied from llama.cpp (tools/perplexity/perplexity.cpp, `perplexity()`):
- the whole text is tokenized once, with BOS in front iff the model adds one (add_bos);
- it is cut into n = len(tokens) // C windows of C tokens; the tail is dropped, and fewer
  than 2*C tokens is refused;
- each window runs from position 0 on a fresh KV cache, its first token replaced by BOS
  when the model adds one (so every window starts the way a document does);
- with first = C // 2, the logits at positions first .. C-2 score the tokens at positions
  first+1 .. C-1: C - 1 - C//2 tokens a window (255 at C = 512), each with at least half
  a window of context behind it;
- perplexity = exp(mean NLL over every scored token), with llama.cpp's error estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from core.errors import TpiError

MIN_CONTEXT = 3  # the smallest window that scores a token: positions 0, 1 -> predicts 2


class AllLogitsStep(Protocol):
    """A runner's step (LocalCluster, Session, MasterRunner): with all_logits, [T, V]."""

    def __call__(self, ids: list[int], pos: int, all_logits: bool = False) -> torch.Tensor: ...


def text_tokens(ids: list[int], bos_id: int | None) -> list[int]:
    """The text's ids (tokenized without special tokens) as llama.cpp tokenizes a file:
    BOS in front when the model adds one (`bos_id` not None)."""
    return ([bos_id] if bos_id is not None else []) + list(ids)


def check_context(context: int, model_context: int | None = None) -> None:
    """TpiError unless `context` is a window length that scores tokens and, when
    `model_context` is given, that the model can run."""
    _check_min(context)
    if model_context is not None and context > model_context:
        raise TpiError(f"--context {context} is larger than the model's context of "
                       f"{model_context} tokens; use --context {model_context} or less")


def windows(tokens: list[int], context: int, bos_id: int | None) -> list[list[int]]:
    """Consecutive non-overlapping windows of `context` tokens (the tail that does not
    fill one is dropped), each starting with BOS when `bos_id` is given."""
    _check_min(context)
    if len(tokens) < 2 * context:  # llama.cpp's own minimum
        raise TpiError(f"the text is {len(tokens)} tokens long; perplexity with --context "
                       f"{context} needs at least {2 * context}: use a longer text or a "
                       "smaller --context")
    out = []
    for start in range(0, len(tokens) // context * context, context):
        w = tokens[start : start + context]
        if bos_id is not None:
            w[0] = bos_id  # replaced, not inserted: every window stays `context` long
        out.append(w)
    return out


def _check_min(context: int) -> None:
    if context < MIN_CONTEXT:
        raise TpiError(f"--context must be at least {MIN_CONTEXT} tokens (got {context})")


def scored_positions(context: int) -> range:
    """Positions (within a window) of the tokens a window scores."""
    return range(context // 2 + 1, context)


def window_nll(logits: torch.Tensor, window: list[int]) -> tuple[float, float, int]:
    """(sum of NLL, sum of NLL squared, count) of the scored tokens of one window, from its
    logits [C, V] (row i predicts token i+1). Log-softmax in float64: with a 50k vocabulary
    a float32 log-sum-exp loses digits the mean over thousands of tokens would keep."""
    context = len(window)
    if logits.shape[0] != context:
        raise ValueError(f"{logits.shape[0]} rows of logits for a window of {context} tokens")
    first = context // 2
    rows = logits[first : context - 1].to(torch.float64)  # predict tokens first+1 .. C-1
    targets = torch.tensor(window[first + 1 :], dtype=torch.int64)
    nll = -rows.log_softmax(-1).gather(1, targets[:, None])[:, 0]
    return float(nll.sum()), float((nll * nll).sum()), int(nll.numel())


@dataclass
class Running:
    """The sums so far; `perplexity` of what was scored (llama.cpp's running value)."""

    windows: int = 0
    tokens: int = 0
    nll: float = 0.0
    nll2: float = 0.0

    def add(self, nll: float, nll2: float, count: int) -> None:
        self.windows += 1
        self.tokens += count
        self.nll += nll
        self.nll2 += nll2

    @property
    def mean_nll(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll) if self.tokens else float("nan")

    @property
    def perplexity_error(self) -> float:
        """llama.cpp's '+/-': the standard error of the mean NLL, times the perplexity."""
        if self.tokens < 2:
            return float("nan")
        var = self.nll2 / self.tokens - self.mean_nll ** 2
        return math.sqrt(max(var, 0.0) / (self.tokens - 1)) * self.perplexity


def score(step: AllLogitsStep, chunks: list[list[int]],
          on_window: Callable[[Running, int], None] | None = None) -> Running:
    """Run every window from position 0 (a step at pos 0 overwrites the KV cache, so each
    starts afresh) and add up its NLL; `on_window(running, total)` after each one."""
    run = Running()
    for w in chunks:
        logits = step(w, 0, all_logits=True)
        run.add(*window_nll(logits, w))
        if on_window is not None:
            on_window(run, len(chunks))
    return run
