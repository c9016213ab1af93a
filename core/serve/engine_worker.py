"""The one thread that runs the model, and the bounded FIFO queue in front of it.

The engine is not thread-safe, so every reply of the API runs on `ModelWorker`'s thread,
one at a time, in the order requests were admitted. A job's events (Started, Text,
Finished or Failed) go back to the asyncio side through its event loop. A job cancelled
while it waits is dropped from the queue; one cancelled while it runs (its client went
away) ends after the token being computed: the engine checks between tokens.

`tpi-chat serve` runs the jobs on the thread that loaded the model (`serve_here`), not on
a thread of their own (`start`): libgomp keeps one OpenMP team per thread that ever ran a
parallel region, and once it manages more threads than there are cores it makes every
team sleep between parallel regions instead of spinning. The loading thread's team and a
second one for the model thread were 3 threads on a 2-core machine: ~190 futex sleeps
per token and about half the decode speed of `tpi-chat generate` (50 vs 126 tokens/s).
The app's chat steps the model on its engine thread, so the app passes `run_on`
(hand_over.py): start()'s thread then only takes the jobs from the queue, one at a time,
and hands each to the engine thread, waiting for it to end before taking the next; a
reply of the app's chat asked for meanwhile runs first (the engine's own queue is first
come, first served).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from core.engine.generate import GenerationResult, Generator
from core.engine.sampler import SamplingParams
from core.errors import TpiError
from core.model.tokenizer import ChatTokenizer, TextStream
from core.serve.errors import ApiError, engine_failed, queue_full, shutting_down
from core.serve.hand_over import RunOn, hand_over
from core.serve.penalties import adjusted
from core.serve.schemas import Sampling
from core.serve.stop_text import StopText
from core.serve.text_batcher import TextBatcher

log = logging.getLogger(__name__)


@dataclass
class Started:
    pass


@dataclass
class Text:
    text: str


@dataclass
class Finished:
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    result: GenerationResult


@dataclass
class Failed:
    error: ApiError


Event = Started | Text | Finished | Failed


@dataclass(eq=False)
class Job:
    """One admitted request: its prompt and how to sample, and where its events go."""

    prompt_ids: list[int]
    params: SamplingParams
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    out_of_view: int = 0  # messages the context policy left out of the prompt

    def emit(self, event: Event) -> None:
        """Thread-safe: hand an event to the request's handler."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()


class JobQueue:
    """At most `max_waiting` jobs waiting (the running one not counted), first in first
    out; put() refuses with a 503 when full or closed."""

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise shutting_down()
            self._drop_cancelled()
            if len(self._jobs) >= self.max_waiting:
                raise queue_full(self.max_waiting)
            self._jobs.append(job)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Job | None:
        """The next job not cancelled; None when closed (or after `timeout`)."""
        with self._cond:
            while True:
                self._drop_cancelled()
                if self._closed:
                    return None
                if self._jobs:
                    return self._jobs.popleft()
                if not self._cond.wait(timeout) and timeout is not None:
                    return None

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def waiting(self) -> int:
        with self._cond:
            self._drop_cancelled()
            return len(self._jobs)

    def close(self) -> list[Job]:
        """Refuse new jobs; returns the ones still waiting."""
        with self._cond:
            self._closed = True
            left = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
            return left

    def _drop_cancelled(self) -> None:
        if any(j.cancelled.is_set() for j in self._jobs):
            self._jobs = deque(j for j in self._jobs if not j.cancelled.is_set())


class ModelWorker:
    """Runs the queue's jobs on `generator`, one at a time: on a thread of its own
    (start), on the caller's (serve_here), or, with `run_on`, on the thread it posts to
    (start)."""

    def __init__(self, tokenizer: ChatTokenizer, generator: Generator, queue: JobQueue,
                 on_reply: Callable[[GenerationResult, bool], None] | None = None,
                 stream_interval_s: float = 0.05, run_on: RunOn | None = None,
                 on_step: Callable[[], None] | None = None):
        self.tokenizer = tokenizer
        # after each token, on the thread running the reply: the app's stats go on there
        self.on_step = on_step
        self.stream_interval_s = stream_interval_s  # text_batcher.py
        self.generator = generator
        self.queue = queue
        self.on_reply = on_reply
        self.run_on = run_on
        self._thread: threading.Thread | None = None
        self._current: Job | None = None

    def start(self) -> ModelWorker:
        self._thread = threading.Thread(target=self._loop, name="tpi-serve-model", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, fail the waiting ones, end the running one after its current
        token, and wait for the thread."""
        for job in self.queue.close():
            job.emit(Failed(shutting_down()))
        self.cancel_current()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def serve_here(self, stop: Callable[[], bool], poll_s: float = 0.5) -> None:
        """Run the jobs on the calling thread until the queue closes or `stop()` turns true
        (looked at every `poll_s` while idle). Interrupted (Ctrl-C), the running job's
        client is told the server is shutting down."""
        while not stop():
            job = self.queue.get(poll_s)
            if job is None:
                if self.queue.closed:
                    return
                continue
            try:
                self._one(job)
            except BaseException:
                job.emit(Failed(shutting_down()))
                raise

    def cancel_current(self) -> None:
        """End the running job after its current token (safe from a signal handler)."""
        current = self._current
        if current is not None:
            current.cancel()

    def _loop(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.run_on is None:
                self._one(job)
            else:
                self._hand_over(job)

    def _one(self, job: Job) -> None:
        self._current = job
        try:
            self._run_unless_cancelled(job)
        finally:
            self._current = None

    def _hand_over(self, job: Job) -> None:
        """Run `job` on run_on's thread and wait for it. Withdrawn before it began there
        (its client left, or stop()), it never runs, and its client (if still there) is
        told the server is shutting down."""
        self._current = job
        try:
            ran = hand_over(self.run_on, lambda: self._run_unless_cancelled(job),
                            lambda: job.cancelled.is_set() or self.queue.closed)
        finally:
            self._current = None
        if not ran:
            job.emit(Failed(shutting_down()))

    def _run_unless_cancelled(self, job: Job) -> None:
        if not job.cancelled.is_set():
            self.run(job)

    def run(self, job: Job) -> None:
        """One reply, its events emitted as it goes; never raises."""
        job.emit(Started())
        eos = self.tokenizer.eos_ids
        stream = TextStream(self.tokenizer)
        text = StopText(job.sampling.stop)
        out = TextBatcher(lambda chunk: job.emit(Text(chunk)), self.stream_interval_s)
        with adjusted(self.generator, job.sampling) as adjust:
            def on_token(tok: int) -> None:
                if adjust is not None:
                    adjust.note(tok)
                if self.on_step is not None:
                    self.on_step()
                if tok in eos:
                    return
                out.push(text.feed(stream.push(tok)))

            def should_stop() -> bool:
                return text.hit or job.cancelled.is_set()

            try:
                result = self.generator.generate(job.prompt_ids, job.params, on_token,
                                                 should_stop)
            except TpiError as e:  # a device dropped out: the next reply re-plans
                out.flush()
                job.emit(Failed(engine_failed(str(e))))
                return
            except Exception as e:
                log.exception("a reply failed")
                out.flush()
                job.emit(Failed(engine_failed(f"the model failed: {e}")))
                return
        out.flush(text.feed(stream.flush()) + text.finish())
        finish = "stop" if text.hit or result.stop_reason == "eos" else "length"
        gone = job.cancelled.is_set()
        job.emit(Finished(finish, len(job.prompt_ids), len(result.token_ids), result))
        if self.on_reply is not None:
            self.on_reply(result, gone)
