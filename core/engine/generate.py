"""The generate loop on rank 0: prefill, decode, sample, stop, and KV reuse across turns.

The KV cache of every rank holds the conversation so far; a follow-up that extends it only
feeds the new tokens (a regenerate or an edit rewinds to the common prefix).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

from core.engine.heap_trim import trim_heap
from core.engine.kv_prefix import common_prefix
from core.engine.sampler import Sampler, SamplingParams
from core.errors import TpiError

if TYPE_CHECKING:
    from core.engine.speculative import Speculator


class StepRunner(Protocol):
    max_seq: int

    def step(self, ids: list[int], pos: int) -> torch.Tensor: ...


class VerifyingRunner(StepRunner, Protocol):
    """A runner speculative decoding can use: logits of every position on request."""

    def step(self, ids: list[int], pos: int, all_logits: bool = False) -> torch.Tensor: ...


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
    # speculative decoding: per step, draft tokens proposed and how many the target kept
    draft_k: list[int] = field(default_factory=list)
    accepted_per_step: list[int] = field(default_factory=list)

    @property
    def acceptance(self) -> float | None:
        """Share of drafted tokens kept (None: nothing was drafted)."""
        k = sum(self.draft_k)
        return sum(self.accepted_per_step) / k if k else None


class Generator:
    """Generates replies on a StepRunner, remembering which ids its KV cache holds.

    With a `speculator` (core/engine/speculative.py) decode steps may check several
    drafted tokens at once; the reply is the same (greedy) or drawn from the same
    distribution (sampling) as without one."""

    def __init__(self, runner: StepRunner, eos_ids: set[int],
                 speculator: Speculator | None = None):
        self.runner = runner
        self.eos_ids = set(eos_ids)
        self.speculator = speculator
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
        spec = self.speculator
        t0 = time.perf_counter()
        if spec is not None:
            spec.begin(params)
            if spec.control.may_speculate():
                spec.warm(prompt_ids)  # the draft's prefill beside the cluster's
        reuse = common_prefix(self.cached, prompt_ids)
        logits = self._feed(prompt_ids[reuse:], reuse)
        out: list[int] = []
        step_ms: list[float] = []
        pending = [sampler(logits, torch.tensor(prompt_ids, dtype=torch.int64))]
        t_first = t_last = time.perf_counter()
        reason = ""
        while True:
            for tok in pending:  # one token, or what a speculative step kept
                out.append(tok)
                if len(out) == 1:
                    t_first = time.perf_counter()
                if on_token:
                    on_token(tok)
                if tok in self.eos_ids:
                    reason = "eos"
                elif len(out) >= max_new:
                    reason = "length"
                if reason:
                    break
            if reason:
                break
            if should_stop and should_stop():
                reason = "stopped"
                break
            ts = time.perf_counter()
            pending = self._decode_step(prompt_ids + out, sampler, max_new - len(out))
            step_ms.append((time.perf_counter() - ts) * 1000)
        t_last = time.perf_counter()
        trim_heap()  # the prefill's temporaries, so a long chat's memory stays flat
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
            draft_k=list(spec.k_per_step) if spec else [],
            accepted_per_step=list(spec.accepted_per_step) if spec else [],
        )

    def _decode_step(self, seq: list[int], sampler: Sampler, budget: int) -> list[int]:
        """The next token(s) after seq, whose last id the cluster has not run yet; at most
        `budget` of them are wanted."""
        spec = self.speculator
        pos = len(seq) - 1
        k = 0
        if spec is not None:
            room = min(self.runner.max_seq - len(seq), spec.limit(len(seq)), budget - 1)
            k = spec.control.choose(room)
        if k > 0:
            out = spec.step(seq, k, sampler, self._feed, pos)
            del self.cached[pos + len(out):]  # drafts past the kept ones: overwritten later
            return out
        ts = time.perf_counter()
        busy = spec is not None and spec.warming  # the draft's prefill shares the cores
        logits = self._feed(seq[-1:], pos)
        if spec is not None and not busy and not spec.warming:
            spec.control.note_plain((time.perf_counter() - ts) * 1000)
        return [sampler(logits, torch.tensor(seq, dtype=torch.int64))]

    def _feed(self, ids: list[int], pos: int, all_logits: bool = False) -> torch.Tensor:
        # Positions >= pos are about to be overwritten; if the step fails, the cache is
        # still valid up to pos.
        del self.cached[pos:]
        if all_logits:
            logits = self.runner.step(ids, pos, all_logits=True)
        else:
            logits = self.runner.step(ids, pos)
        self.cached.extend(ids)
        return logits
