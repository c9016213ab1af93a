"""One reply at a time, the others waiting in arrival order in a bounded queue; a client
that goes away mid-reply frees the model within a second. A server whose steps are made
slow (2 ranks, 10 ms added to every link: ~140 ms a token) makes the timing visible."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from tests.core.serve.conftest import MODEL, assert_error_shape
from tests.fixtures.serve import ROOT, ServeProcess

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def slow(tiny):
    """No --api-key: on 127.0.0.1 none is needed, and any key a client sends is fine.
    The emulated link makes a token slow; --speculate off keeps it one token a step (a
    draft would answer within the queue's first half second)."""
    s = ServeProcess("--model", str(tiny), "--ranks", "2", "--link-delay-ms", "10",
                     "--max-queue", "2", "--speculate", "off")
    yield s
    s.close()


def _client(server):
    import openai

    return openai.OpenAI(base_url=server.api, api_key="anything", max_retries=0, timeout=120)


class Streamer(threading.Thread):
    """A client streaming one reply in a thread: when its role chunk (the reply started)
    and its finish chunk arrived."""

    def __init__(self, server, max_tokens: int):
        super().__init__(daemon=True)
        self.client, self.max_tokens = _client(server), max_tokens
        self.started = self.finished = None
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            for c in self.client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, temperature=0, stream=True,
                    max_tokens=self.max_tokens):
                if c.choices and c.choices[0].delta.role:
                    self.started = time.monotonic()
                if c.choices and c.choices[0].finish_reason:
                    self.finished = time.monotonic()
        except Exception as e:
            self.error = e

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.started is None and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.started is not None, self.error


def test_clients_at_once_are_answered_one_by_one_in_arrival_order(slow):
    import openai

    a = Streamer(slow, 20)
    a.wait_started()
    b = Streamer(slow, 3)
    time.sleep(0.3)
    c = Streamer(slow, 3)
    time.sleep(0.3)
    with pytest.raises(openai.APIStatusError) as full:  # a running, b and c waiting
        _client(slow).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
    assert full.value.status_code == 503
    assert assert_error_shape(full.value.response.json(), 503)["code"] == "queue_full"
    for t in (a, b, c):
        t.join(60)
        assert t.error is None and t.finished is not None, t.error
    slack = 0.05  # two client threads read their sockets a little apart
    assert b.started >= a.finished - slack
    assert c.started >= b.finished - slack
    assert a.finished - a.started > 0.4  # a really ran while b and c arrived


KILLED_CLIENT = textwrap.dedent("""
    import sys, openai
    c = openai.OpenAI(base_url=sys.argv[1], api_key="x", max_retries=0)
    ask = dict(model=sys.argv[2], temperature=0, max_tokens=200,
               messages=[{"role": "user", "content": "tell me a long story"}])
    if sys.argv[3] == "stream":
        for chunk in c.chat.completions.create(stream=True, **ask):
            if chunk.choices and chunk.choices[0].delta.content:
                print("token", flush=True)
    else:
        print("asking", flush=True)
        c.chat.completions.create(**ask)
""")


@pytest.mark.parametrize("mode", ["stream", "whole"])
def test_a_client_killed_mid_reply_frees_the_model_within_a_second(slow, mode):
    mark = len(slow.stderr())
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, slow.api, MODEL, mode],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        if mode == "stream":
            assert proc.stdout.readline() == "token\n"
            assert proc.stdout.readline() == "token\n"  # it is streaming
        else:
            assert proc.stdout.readline() == "asking\n"
            time.sleep(1.5)  # it waits for the whole reply, a few tokens in
    finally:
        proc.kill()
        killed = time.monotonic()
        proc.wait()
        proc.stdout.close()
    nxt = Streamer(slow, 2)
    nxt.join(60)
    assert nxt.error is None and nxt.finished is not None, nxt.error
    assert nxt.started - killed < 1.0
    m = slow.wait_stderr(r"(\d+) generated \(client went away\)", since=mark)
    assert 1 < int(m.group(1)) < 30  # of 200
