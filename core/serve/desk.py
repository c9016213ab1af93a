"""The front desk: a checked request becomes a queued Job, or a 400/413/503.

Runs on one thread of its own (server.py), so requests are admitted in the order they
arrived and a long prompt's tokenization never blocks the event loop or the model. It has
its own tokenizer instance: the model thread's is never used from two threads.

A chat longer than the context is fitted by the server's context policy (drop the oldest
turns by default; core/engine/context_policy.py), keeping room for the reply; the
response's X-Messages-Out-Of-View header says how many messages the model did not see.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from core.engine.context_policy import ContextFitter, ContextFull, ContextPolicy, reply_room
from core.engine.sampler import SamplingParams
from core.errors import ModelError
from core.model.tokenizer import ChatTokenizer
from core.serve.engine_worker import Job, JobQueue
from core.serve.errors import bad_request, context_full
from core.serve.schemas import ChatRequest, CompletionRequest, Sampling

DEFAULT_REPLY_ROOM = 256  # tokens kept free for a chat reply when max_tokens is not given


class FrontDesk:
    def __init__(self, tokenizer: ChatTokenizer, context: Callable[[], int], queue: JobQueue,
                 policy: ContextPolicy | None = None):
        self.tokenizer = tokenizer
        self.context = context  # the runner's max_seq (it may change after a re-plan)
        self.queue = queue
        self.vocab = _vocab_size(tokenizer)
        self.fitter = ContextFitter(policy)

    def admit_chat(self, req: ChatRequest, loop: asyncio.AbstractEventLoop) -> Job:
        """The request's job; its `out_of_view` counts the messages left out of the prompt."""
        n_system = next((i for i, m in enumerate(req.messages) if m["role"] != "system"),
                        len(req.messages))
        context = self.context()
        wanted = req.sampling.max_tokens or DEFAULT_REPLY_ROOM
        try:
            fit = self.fitter.fit(self._render, req.messages[:n_system],
                                  req.messages[n_system:], context, reply_room(wanted, context))
        except ModelError as e:
            raise bad_request(str(e), "messages") from None
        except ContextFull as e:
            raise context_full(str(e)) from None
        job = self._admit(fit.ids, req.sampling, loop, "messages")
        job.out_of_view = fit.dropped
        return job

    def _render(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat(messages, add_generation_prompt=True)

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
            raise context_full(f"the prompt ({len(ids)} tokens) fills the model's "
                               f"whole context of {context} tokens; shorten it", param)
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
