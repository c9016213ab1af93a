"""The front desk: a checked request becomes a queued Job, or a 400/413/503.

Runs on one thread of its own (server.py), so requests are admitted in the order they
arrived and a long prompt's tokenization never blocks the event loop or the model. It has
its own tokenizer instance: the model thread's is never used from two threads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from core.engine.sampler import SamplingParams
from core.errors import ModelError
from core.model.tokenizer import ChatTokenizer
from core.serve.engine_worker import Job, JobQueue
from core.serve.errors import bad_request, context_full
from core.serve.schemas import ChatRequest, CompletionRequest, Sampling


class FrontDesk:
    def __init__(self, tokenizer: ChatTokenizer, context: Callable[[], int], queue: JobQueue):
        self.tokenizer = tokenizer
        self.context = context  # the runner's max_seq (it may change after a re-plan)
        self.queue = queue
        self.vocab = _vocab_size(tokenizer)

    def admit_chat(self, req: ChatRequest, loop: asyncio.AbstractEventLoop) -> Job:
        try:
            ids = self.tokenizer.apply_chat(req.messages, add_generation_prompt=True)
        except ModelError as e:
            raise bad_request(str(e), "messages") from None
        return self._admit(ids, req.sampling, loop, "messages")

    def admit_completion(self, req: CompletionRequest, loop: asyncio.AbstractEventLoop
                         ) -> tuple[Job, str]:
        """The job and the prompt's text (for echo)."""
        if isinstance(req.prompt, str):
            ids, text = self.tokenizer.encode(req.prompt), req.prompt
        else:
            if max(req.prompt) >= self.vocab:
                raise bad_request(f"token ids must be below {self.vocab}.", "prompt")
            ids, text = req.prompt, self.tokenizer.decode(req.prompt)
        return self._admit(ids, req.sampling, loop, "prompt"), text

    def _admit(self, ids: list[int], s: Sampling, loop, param: str) -> Job:
        if not ids:
            raise bad_request("The prompt is empty.", param)
        if any(t >= self.vocab for t in s.logit_bias):
            raise bad_request(f"logit_bias token ids must be below {self.vocab}.",
                              "logit_bias")
        context = self.context()
        room = context - len(ids)
        if room < 1:
            err = context_full(len(ids), context)
            err.param = param
            raise err
        greedy = s.temperature == 0 or s.top_p == 0  # top_p 0 keeps only the top token
        params = SamplingParams(temperature=0.0 if greedy else s.temperature,
                                top_p=1.0 if greedy else s.top_p, seed=s.seed,
                                max_new_tokens=min(s.max_tokens or room, room))
        job = Job(ids, params, s, loop)
        self.queue.put(job)
        return job


def _vocab_size(tokenizer: ChatTokenizer) -> int:
    """Token ids the model can embed: its config's vocab_size, at most the tokenizer's."""
    n = len(tokenizer)
    try:
        cfg = json.loads((tokenizer.model_dir / "config.json").read_text(encoding="utf-8"))
        v = cfg.get("vocab_size")
    except (OSError, ValueError, AttributeError):
        return n
    return min(n, v) if isinstance(v, int) and v > 0 else n
