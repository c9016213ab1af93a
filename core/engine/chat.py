"""A conversation on rank 0: messages -> chat template -> generate -> streamed text.

Keeps the message list and lets the Generator reuse the KV cache of the turns so far, so a
follow-up only pays for its new tokens. A conversation longer than the context is fitted
by its ContextFitter (core/engine/context_policy.py): older turns fall out of the model's
view, and `Reply.out_of_view` says which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from core.engine.context_policy import ContextFitter, ContextPolicy, reply_room
from core.engine.generate import GenerationResult, Generator, StepRunner
from core.engine.sampler import SamplingParams
from core.model.tokenizer import ChatTokenizer, TextStream


@dataclass
class Reply:
    """One finished assistant turn."""

    text: str
    result: GenerationResult
    out_of_view: range = range(0)  # indices of `messages` the model did not see


@dataclass
class ChatSession:
    """Messages of one conversation, with its system prompt."""

    tokenizer: ChatTokenizer
    runner: StepRunner
    system: str | None = None
    messages: list[dict] = field(default_factory=list)
    policy: ContextPolicy = field(default_factory=ContextPolicy)

    def __post_init__(self) -> None:
        self.generator = Generator(self.runner, self.tokenizer.eos_ids)
        self.fitter = ContextFitter(self.policy)

    def set_policy(self, policy: ContextPolicy) -> None:
        """Fit later turns by `policy` (the cuts made so far are forgotten)."""
        self.policy = policy
        self.fitter = ContextFitter(policy)

    def prompt_ids(self, max_new_tokens: int = 1) -> tuple[list[int], range]:
        """The prompt the model gets, and the indices of the messages left out of it."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        context = self.runner.max_seq
        fit = self.fitter.fit(self._render, system, self.messages, context,
                              reply_room(max_new_tokens, context))
        return fit.ids, range(fit.lo, fit.hi)

    def _render(self, msgs: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat(msgs, add_generation_prompt=True)

    def send(
        self,
        text: str,
        params: SamplingParams,
        on_text: Callable[[str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Reply:
        """Add a user message and generate the assistant's reply, streaming its text."""
        self.messages.append({"role": "user", "content": text})
        try:
            return self._reply(params, on_text, should_stop)
        except BaseException:
            self.messages.pop()  # the failed turn is not part of the conversation
            raise

    def regenerate(self, params: SamplingParams, on_text=None, should_stop=None) -> Reply:
        """Drop the last assistant reply and generate it again."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            self.messages.pop()
        return self._reply(params, on_text, should_stop)

    def complete_raw(self, text: str, params: SamplingParams, on_text=None,
                     should_stop=None) -> Reply:
        """Continue `text` as is, with no chat template and no history."""
        return self._stream(self.tokenizer.encode(text), params, on_text, should_stop)

    def _reply(self, params, on_text, should_stop) -> Reply:
        ids, out_of_view = self.prompt_ids(params.max_new_tokens)
        reply = self._stream(ids, params, on_text, should_stop)
        reply.out_of_view = out_of_view
        self.messages.append({"role": "assistant", "content": reply.text})
        return reply

    def _stream(self, ids: list[int], params, on_text, should_stop) -> Reply:
        stream = TextStream(self.tokenizer)
        eos = self.tokenizer.eos_ids

        def on_token(tok: int) -> None:
            if tok in eos:
                return
            piece = stream.push(tok)
            if piece and on_text:
                on_text(piece)

        result = self.generator.generate(ids, params, on_token, should_stop)
        tail = stream.flush()
        if tail and on_text:
            on_text(tail)
        return Reply(text=stream.text, result=result)
