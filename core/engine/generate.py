"""The generate loop on rank 0: prefill, decode, sample, stop, and KV reuse across turns.

The KV cache of every rank holds the conversation so far; a follow-up that extends it only
feeds the new tokens (a regenerate or an edit rewinds to the common prefix).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from core.engine.sampler import Sampler, SamplingParams
from core.errors import TpiError


class StepRunner(Protocol):
    max_seq: int

    def step(self, ids: list[int], pos: int) -> torch.Tensor: ...


@dataclass
class GenerationResult:
    """What a reply took: the ids, why it stopped, and how fast it went."""

    token_ids: list[int]
    prompt_tokens: int
    reused_tokens: int  # prompt tokens whose KV was already cached
    stop_reason: str  # "eos", "length", "stopped"
    ttft_ms: float
    decode_ms_per_token: float
    tokens_per_s: float
    step_ms: list[float] = field(default_factory=list)


class Generator:
    """Generates replies on a StepRunner, remembering which ids its KV cache holds."""

    def __init__(self, runner: StepRunner, eos_ids: set[int]):
        self.runner = runner
        self.eos_ids = set(eos_ids)
        self.cached: list[int] = []  # ids whose KV is valid on every rank, in order

    def forget(self) -> None:
        """Drop the KV prefix (a new conversation)."""
        self.cached = []

    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        on_token: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Reply to prompt_ids; on_token is called with each id as soon as it is chosen."""
        if not prompt_ids:
            raise TpiError("the prompt is empty")
        room = self.runner.max_seq - len(prompt_ids)
        if room < 1:
            raise TpiError(f"the prompt ({len(prompt_ids)} tokens) fills the whole context of "
                           f"{self.runner.max_seq} tokens; shorten it or start a new chat")
        max_new = min(params.max_new_tokens, room)
        sampler = Sampler(params)
        seen = torch.tensor(prompt_ids, dtype=torch.int64)
        t0 = time.perf_counter()
        reuse = self._common_prefix(prompt_ids)
        logits = self._feed(prompt_ids[reuse:], reuse)
        out: list[int] = []
        step_ms: list[float] = []
        t_first = t_last = time.perf_counter()
        reason = "length"
        while True:
            tok = sampler(logits, seen)
            out.append(tok)
            if len(out) == 1:
                t_first = time.perf_counter()
            if on_token:
                on_token(tok)
            if tok in self.eos_ids:
                reason = "eos"
                break
            if len(out) >= max_new:
                break
            if should_stop and should_stop():
                reason = "stopped"
                break
            seen = torch.cat([seen, torch.tensor([tok])])
            ts = time.perf_counter()
            logits = self._feed([tok], len(self.cached))
            step_ms.append((time.perf_counter() - ts) * 1000)
        t_last = time.perf_counter()
        n_dec = len(out) - 1
        decode_ms = (t_last - t_first) * 1000 / n_dec if n_dec else 0.0
        return GenerationResult(
            token_ids=out,
            prompt_tokens=len(prompt_ids),
            reused_tokens=reuse,
            stop_reason=reason,
            ttft_ms=(t_first - t0) * 1000,
            decode_ms_per_token=decode_ms,
            tokens_per_s=1000 / decode_ms if decode_ms else 0.0,
            step_ms=step_ms,
        )

    def _common_prefix(self, ids: list[int]) -> int:
        n = 0
        for a, b in zip(self.cached, ids, strict=False):
            if a != b:
                break
            n += 1
        return min(n, len(ids) - 1)  # at least one token must run, to get logits

    def _feed(self, ids: list[int], pos: int) -> torch.Tensor:
        # Positions >= pos are about to be overwritten; if the step fails, the cache is
        # still valid up to pos.
        del self.cached[pos:]
        logits = self.runner.step(ids, pos)
        self.cached.extend(ids)
        return logits
