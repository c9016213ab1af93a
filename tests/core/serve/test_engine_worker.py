"""The queue in front of the model: first in first out, bounded, cancelled jobs dropped."""

from __future__ import annotations

import asyncio
import threading

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
