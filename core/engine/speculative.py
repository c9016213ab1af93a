"""Speculative decoding on rank 0: a draft model proposes k tokens, the cluster checks them
in one step.

    spec = Speculator(draft_runner, KControl(fixed_k, draft_ms))
    Generator(cluster, eos_ids, speculator=spec)

A step: the draft (a MasterRunner of its own on this machine, with its own KV cache)
catches up on the tokens it has not seen and proposes d1..dk; the cluster runs
[last, d1..dk] at positions pos..pos+k in one forward pass and returns logits of every
position; core/engine/spec_accept.py keeps a prefix of the drafts plus one token of the
target's own. KV entries past the kept tokens are left as they are: the next step writes
over them (on every rank, and in the draft), so nothing needs rolling back.

The round trips of the cluster's allreduces are paid once per step instead of once per
token, which is what makes this pay on a home network.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import torch

from core.engine.kv_prefix import common_prefix
from core.engine.sampler import Sampler, SamplingParams
from core.engine.spec_accept import accept_greedy, accept_sampled
from core.engine.spec_control import KControl

log = logging.getLogger(__name__)


class DraftRunner(Protocol):
    max_seq: int

    def step(self, ids: list[int], pos: int) -> torch.Tensor: ...


class VerifyFeed(Protocol):
    """The Generator's side: run ids at pos on the cluster, every position's logits."""

    def __call__(self, ids: list[int], pos: int, all_logits: bool = False) -> torch.Tensor: ...


class Speculator:
    """A draft model plus the k controller, and what the current reply's steps kept."""

    def __init__(self, draft: DraftRunner, control: KControl | None = None,
                 close=None):
        self.draft = draft
        self.control = control or KControl()
        self.cached: list[int] = []  # ids whose KV is valid in the draft's cache
        self.accepted_per_step: list[int] = []
        self.k_per_step: list[int] = []
        self._gen = torch.Generator()
        self._close = close
        self._warming: threading.Thread | None = None

    def begin(self, params: SamplingParams) -> None:
        """A new reply: fresh counts, and the draft's own random stream (from the seed)."""
        self.accepted_per_step, self.k_per_step = [], []
        if params.seed is not None:
            self._gen.manual_seed(params.seed + 1)
        else:
            self._gen.seed()

    def warm(self, prompt_ids: list[int]) -> None:
        """Run the prompt through the draft on a thread of its own, while the cluster runs
        it too (mostly waiting on the links), so the first speculative step does not pay
        the draft's prefill. A failure here only means the first step does it again."""
        self.settle()

        def run() -> None:
            try:
                self._feed(prompt_ids[common_prefix(self.cached, prompt_ids):],
                           common_prefix(self.cached, prompt_ids))
            except Exception as e:  # noqa: BLE001 - the step that needs it will say why
                self.cached = []
                log.info("draft prefill failed: %s", e)

        self._warming = threading.Thread(target=run, name="draft-prefill", daemon=True)
        self._warming.start()

    @property
    def warming(self) -> bool:
        return self._warming is not None and self._warming.is_alive()

    def settle(self) -> None:
        """Wait for the draft's prefill thread, if one runs."""
        if self._warming is not None:
            self._warming.join()
            self._warming = None

    @property
    def acceptance(self) -> float | None:
        """Share of this reply's drafted tokens the target kept (None: none drafted)."""
        k = sum(self.k_per_step)
        return sum(self.accepted_per_step) / k if k else None

    def limit(self, seq_len: int) -> int:
        """The most tokens the draft's context lets it propose after seq_len tokens."""
        return self.draft.max_seq - seq_len + 1

    def step(self, seq: list[int], k: int, sampler: Sampler, verify: VerifyFeed,
             pos: int) -> list[int]:
        """One speculative step after `seq` (prompt + reply so far; its last id not yet
        run on the cluster, which holds seq[:-1] at 0..pos-1): the tokens to emit."""
        self.settle()
        t0 = time.perf_counter()
        drafts, q, draft_ms = self._propose(seq, k, sampler)
        t1 = time.perf_counter()
        logits = verify([seq[-1], *drafts], pos, all_logits=True)  # [k+1, V]
        t2 = time.perf_counter()
        base = torch.tensor(seq, dtype=torch.int64)

        def seen_at(i: int) -> torch.Tensor:
            return torch.cat([base, torch.tensor(drafts[:i], dtype=torch.int64)])

        if sampler.greedy:
            out = accept_greedy(drafts, lambda i: sampler.argmax(logits[i], seen_at(i)))
        else:
            out = accept_sampled(drafts, q, lambda i: sampler.probs(logits[i], seen_at(i)),
                                 self._gen)
        kept = len(out) - 1
        self.accepted_per_step.append(kept)
        self.k_per_step.append(k)
        self.control.note_spec(k, kept, (t2 - t1) * 1000, draft_ms,
                               (time.perf_counter() - t0) * 1000)
        return out

    def _propose(self, seq: list[int], k: int, sampler: Sampler
                 ) -> tuple[list[int], list[torch.Tensor], float | None]:
        """k draft tokens after seq, each drawn as the sampler would (greedy: argmax), the
        distributions they were drawn from, and ms per draft step (None when the draft had
        a long catch-up to run: that one-off cost is not what a step costs)."""
        reuse = common_prefix(self.cached, seq)
        t0 = time.perf_counter()
        logits = self._feed(seq[reuse:], reuse)
        catch_up = len(seq) - reuse > 2
        base = torch.tensor(seq, dtype=torch.int64)
        drafts: list[int] = []
        q: list[torch.Tensor] = []
        for i in range(k):
            seen = torch.cat([base, torch.tensor(drafts, dtype=torch.int64)])
            if sampler.greedy:
                d = sampler.argmax(logits, seen)
            else:
                q.append(sampler.probs(logits, seen))
                d = int(torch.multinomial(q[-1], 1, generator=self._gen))
            drafts.append(d)
            if i < k - 1:
                if i == 0 and catch_up:
                    t0 = time.perf_counter()
                logits = self._feed([d], len(self.cached))
        calls = k - 1 if catch_up else k
        ms = (time.perf_counter() - t0) * 1000 / calls if calls else None
        return drafts, q, ms

    def _feed(self, ids: list[int], pos: int) -> torch.Tensor:
        del self.cached[pos:]
        logits = self.draft.step(ids, pos)
        self.cached.extend(ids)
        return logits

    def close(self) -> None:
        self.settle()
        if self._close is not None:
            self._close()

