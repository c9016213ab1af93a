"""The queue in front of the model: first in first out, bounded, cancelled jobs dropped."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from core.engine.sampler import SamplingParams
from core.serve.engine_worker import Job, JobQueue
from core.serve.errors import ApiError
from core.serve.schemas import Sampling


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _job(loop) -> Job:
    return Job([1], SamplingParams(), Sampling(), loop)


def test_jobs_come_out_in_order_and_the_queue_is_bounded(loop):
    q = JobQueue(2)
    a, b, c = _job(loop), _job(loop), _job(loop)
    q.put(a)
    q.put(b)
    with pytest.raises(ApiError) as e:
        q.put(c)
    assert e.value.status == 503 and e.value.code == "queue_full"
    assert q.get(0) is a
    q.put(c)
    assert [q.get(0), q.get(0), q.get(0)] == [b, c, None]


def test_a_cancelled_job_leaves_the_queue_and_its_place(loop):
    q = JobQueue(1)
    a, b = _job(loop), _job(loop)
    q.put(a)
    a.cancel()
    q.put(b)  # a's place is free
    assert q.get(0) is b and q.waiting() == 0


def test_close_wakes_the_worker_and_refuses_new_jobs(loop):
    q = JobQueue(4)
    a = _job(loop)
    q.put(a)
    got = []
    assert q.get(0) is a
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    assert q.close() == []
    t.join(5)
    assert got == [None]
    with pytest.raises(ApiError) as e:
        q.put(_job(loop))
    assert e.value.status == 503


class _Tokenizer:
    eos_ids = {0}

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(96 + i) for i in ids)


class _Generator:
    """Replies 'ab' and notes the thread it ran on; `interrupt` raises as Ctrl-C would."""

    def __init__(self, interrupt: bool = False):
        self.threads: list[int] = []
        self.interrupt = interrupt

    def generate(self, prompt_ids, params, on_token, should_stop):
        from core.engine.generate import GenerationResult

        self.threads.append(threading.get_ident())
        if self.interrupt:
            raise KeyboardInterrupt
        for tok in (1, 2, 0):
            on_token(tok)
        return GenerationResult([1, 2, 0], len(prompt_ids), 0, "eos", 1.0, 1.0, 1.0)


def _events(loop, job) -> list:
    loop.run_until_complete(asyncio.sleep(0))  # run the call_soon_threadsafe callbacks
    out = []
    while not job.events.empty():
        out.append(job.events.get_nowait())
    return out


def test_serve_here_runs_the_replies_on_the_calling_thread_until_stopped(loop):
    """`tpi-chat serve` runs them on the thread that loaded the model (one OpenMP team)."""
    from core.serve.engine_worker import Finished, ModelWorker, Started, Text

    q, gen = JobQueue(4), _Generator()
    worker = ModelWorker(_Tokenizer(), gen, q)
    a, b = _job(loop), _job(loop)
    q.put(a)
    q.put(b)
    worker.serve_here(lambda: len(gen.threads) == 2 and q.waiting() == 0, poll_s=0.01)
    assert gen.threads == [threading.get_ident()] * 2
    for job in (a, b):
        ev = _events(loop, job)
        assert isinstance(ev[0], Started) and isinstance(ev[-1], Finished)
        assert "".join(e.text for e in ev if isinstance(e, Text)) == "ab"
    q.close()
    worker.serve_here(lambda: False, poll_s=0.01)  # a closed queue ends it too


def test_serve_here_interrupted_tells_the_running_client_and_reraises(loop):
    from core.serve.engine_worker import Failed, ModelWorker

    q = JobQueue(4)
    worker = ModelWorker(_Tokenizer(), _Generator(interrupt=True), q)
    job = _job(loop)
    q.put(job)
    with pytest.raises(KeyboardInterrupt):
        worker.serve_here(lambda: False, poll_s=0.01)
    ev = _events(loop, job)
    assert isinstance(ev[-1], Failed) and ev[-1].error.status == 503


class _Owner:
    """A thread of the test's own that runs posted calls in order (the app's engine
    thread, whose Qt event queue run_on posts to); `hold` keeps it busy meanwhile."""

    def __init__(self):
        import queue

        self.calls: queue.Queue = queue.Queue()
        self.posted = 0
        self.hold = threading.Event()
        self.hold.set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def post(self, call) -> None:
        self.posted += 1
        self.calls.put(call)

    def _run(self) -> None:
        while (call := self.calls.get()) is not None:
            self.hold.wait()
            call()

    def close(self) -> None:
        self.hold.set()
        self.calls.put(None)
        self.thread.join(5)


def _wait_for(cond, tries: int = 500) -> None:
    """Poll `cond` every 10 ms, at most `tries` times (the asserts after say what failed)."""
    for _ in range(tries):
        if cond():
            return
        time.sleep(0.01)


def test_with_run_on_the_replies_run_on_the_owners_thread_one_at_a_time(loop):
    """The app's API replies run on its engine thread: one OpenMP team for both."""
    from core.serve.engine_worker import Finished, ModelWorker

    q, gen, owner = JobQueue(4), _Generator(), _Owner()
    owner.hold.clear()
    worker = ModelWorker(_Tokenizer(), gen, q, run_on=owner.post).start()
    a, b = _job(loop), _job(loop)
    q.put(a)
    q.put(b)
    time.sleep(0.3)
    # b waits in the server's queue, not in the owner's: a reply of the app's chat asked
    # for now still goes before it
    assert owner.posted == 1 and q.waiting() == 1
    owner.hold.set()
    _wait_for(lambda: len(gen.threads) == 2)
    worker.stop()
    owner.close()
    assert gen.threads == [owner.thread.ident] * 2
    for job in (a, b):
        assert isinstance(_events(loop, job)[-1], Finished)


def test_with_run_on_a_reply_not_begun_is_withdrawn_by_stop_and_never_runs(loop):
    """attach(None) stops the server on the engine thread itself: a reply posted there
    and not begun must not keep stop() waiting, nor run later on a closed model."""
    from core.serve.engine_worker import Failed, ModelWorker

    q, gen, owner = JobQueue(4), _Generator(), _Owner()
    owner.hold.clear()  # the owner is busy (replying to the app's chat, say)
    worker = ModelWorker(_Tokenizer(), gen, q, run_on=owner.post).start()
    job = _job(loop)
    q.put(job)
    _wait_for(lambda: not owner.calls.empty())
    t0 = time.monotonic()
    worker.stop()
    assert time.monotonic() - t0 < 2
    owner.close()  # the owner gets to the posted call now: it does nothing
    assert gen.threads == []
    ev = _events(loop, job)
    assert isinstance(ev[-1], Failed) and ev[-1].error.status == 503


def test_with_run_on_a_reply_whose_client_left_before_it_began_never_runs(loop):
    """The client went away while the engine thread was busy: the next request is handed
    over without waiting for the engine to get to the withdrawn one."""
    from core.serve.engine_worker import Finished, ModelWorker

    q, gen, owner = JobQueue(4), _Generator(), _Owner()
    owner.hold.clear()
    worker = ModelWorker(_Tokenizer(), gen, q, run_on=owner.post).start()
    a, b = _job(loop), _job(loop)
    q.put(a)
    q.put(b)
    _wait_for(lambda: owner.posted == 1)
    a.cancel()  # its client left
    _wait_for(lambda: owner.posted == 2)
    assert owner.posted == 2 and gen.threads == []  # b handed over, the owner still busy
    owner.hold.set()
    _wait_for(lambda: gen.threads)
    worker.stop()
    owner.close()
    assert gen.threads == [owner.thread.ident]  # b's reply only
    assert isinstance(_events(loop, b)[-1], Finished)
