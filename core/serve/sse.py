"""OpenAI's response objects, whole and as server-sent events.

A stream is `data: {chunk}\n\n` lines: for chat a first chunk with the assistant role,
one per piece of text, a last one with `finish_reason` (and, when the client asked with
stream_options.include_usage, one more with `usage` and no choices), then `data: [DONE]`.
An engine failure mid-stream is sent as `data: {"error": {...}}` before the end.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from core.serve.engine_worker import Failed, Finished, Job, Started, Text


def _usage(done: Finished) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


class ChatShape:
    """chat.completion and chat.completion.chunk objects of one request."""

    def __init__(self, model: str, include_usage: bool = False):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict]) -> dict:
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model, "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            out["usage"] = None
        return out

    def first(self) -> dict | None:
        return self._chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])

    def piece(self, text: str) -> dict:
        return self._chunk([{"index": 0, "delta": {"content": text}, "logprobs": None,
                             "finish_reason": None}])

    def last(self, done: Finished) -> dict:
        return self._chunk([{"index": 0, "delta": {}, "logprobs": None,
                             "finish_reason": done.finish_reason}])

    def usage(self, done: Finished) -> dict:
        return {**self._chunk([]), "usage": _usage(done)}

    def whole(self, text: str, done: Finished) -> dict:
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model, "system_fingerprint": None,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": done.finish_reason}],
                "usage": _usage(done)}


class CompletionShape(ChatShape):
    """text_completion objects (the legacy /v1/completions), streamed or whole."""

    def __init__(self, model: str, include_usage: bool = False):
        super().__init__(model, include_usage)
        self.id = f"cmpl-{uuid.uuid4().hex}"

    def _chunk(self, choices: list[dict]) -> dict:
        out = {"id": self.id, "object": "text_completion", "created": self.created,
               "model": self.model, "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            out["usage"] = None
        return out

    def first(self) -> dict | None:
        return None

    def piece(self, text: str) -> dict:
        return self._chunk([{"index": 0, "text": text, "logprobs": None,
                             "finish_reason": None}])

    def last(self, done: Finished) -> dict:
        return self._chunk([{"index": 0, "text": "", "logprobs": None,
                             "finish_reason": done.finish_reason}])

    def whole(self, text: str, done: Finished) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model, "system_fingerprint": None,
                "choices": [{"index": 0, "text": text, "logprobs": None,
                             "finish_reason": done.finish_reason}],
                "usage": _usage(done)}


def event(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


async def stream(job: Job, shape: ChatShape, prefix: str = "") -> AsyncIterator[bytes]:
    """The job's events as SSE; the job is cancelled if the client goes away (Starlette
    cancels this generator when it sees the disconnect)."""
    try:
        while True:
            ev = await job.events.get()
            if isinstance(ev, Started):
                first = shape.first()
                if first is not None:
                    yield event(first)
                if prefix:
                    yield event(shape.piece(prefix))
            elif isinstance(ev, Text):
                yield event(shape.piece(ev.text))
            elif isinstance(ev, Finished):
                yield event(shape.last(ev))
                if shape.include_usage:
                    yield event(shape.usage(ev))
                yield event("[DONE]")
                return
            elif isinstance(ev, Failed):
                yield event(ev.error.body())
                yield event("[DONE]")
                return
    finally:
        job.cancel()
