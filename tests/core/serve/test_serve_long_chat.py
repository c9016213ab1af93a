"""A chat far longer than the context through `tpi-chat serve` and the openai client: the
oldest turns drop out of view (X-Messages-Out-Of-View), every turn is answered with room
for its reply, the KV of what stays is reused, and the server's memory stays flat."""

from __future__ import annotations

import re
import time

import pytest

from tests.fixtures.long_chat import TURNS, check_flat, rss_mb, user_turn
from tests.fixtures.serve import ServeProcess
from tests.fixtures.tiny_models import make_tiny_model

CONTEXT, REPLY = 512, 40
REPLY_LINE = re.compile(r"(\d+) prompt tokens \((\d+) cached\)")


@pytest.fixture(scope="module")
def tiny512(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("long") / "tiny", "llama",
                           max_position_embeddings=CONTEXT)


def converse(server: ServeProcess, model: str, turns: int, reply: int):
    """(out-of-view count, usage, RSS MB) after each turn of one growing conversation."""
    import openai

    client = openai.OpenAI(base_url=server.api, api_key="none", max_retries=0, timeout=120)
    messages = [{"role": "system", "content": "You tell long stories."}]
    seen = []
    for i in range(turns):
        messages.append({"role": "user", "content": user_turn(i)})
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, temperature=0, max_tokens=reply)
        r = raw.parse()
        messages.append({"role": "assistant", "content": r.choices[0].message.content})
        seen.append((int(raw.headers["x-messages-out-of-view"]), r.usage,
                     rss_mb(server.proc.pid)))
    return seen


def reply_log(server: ServeProcess, n: int) -> list[tuple[int, int]]:
    """(prompt tokens, cached) of the first `n` replies, from the server's one line each
    (the last is written just after its response went out)."""
    deadline = time.monotonic() + 10
    while len(found := REPLY_LINE.findall(server.stderr())) < n and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    return [(int(p), int(c)) for p, c in found[:n]]


def test_forty_long_turns_through_the_api(tiny512):
    server = ServeProcess("--model", str(tiny512), "--threads", "1", "--context",
                          str(CONTEXT))
    try:
        seen = converse(server, "tiny", TURNS, REPLY)
        log = reply_log(server, TURNS)
    finally:
        server.close()
    dropped = [d for d, _, _ in seen]
    assert dropped == sorted(dropped) and dropped[0] == 0 and dropped[-1] > TURNS, dropped
    for _, usage, _ in seen:  # every prompt left the reply its room
        assert usage.prompt_tokens <= CONTEXT - REPLY
        assert usage.completion_tokens == REPLY
    # the KV cache: a turn behind the same cut extends the last prompt and reply, so only
    # its own new tokens are computed; after a new drop, the system prompt's stays
    assert len(log) == TURNS
    for i in range(1, TURNS):
        prompt, cached = log[i]
        if dropped[i] == dropped[i - 1]:
            assert cached >= log[i - 1][0], (i, log)
        else:
            assert 0 < cached < prompt / 2, (i, log)
    first = next(i for i, d in enumerate(dropped) if d)
    check_flat([r for _, _, r in seen], first)


def test_the_stop_policy_refuses_with_413(tiny512):
    import openai

    server = ServeProcess("--model", str(tiny512), "--threads", "1", "--context",
                          str(CONTEXT), "--context-overflow", "stop")
    try:
        with pytest.raises(openai.APIStatusError) as e:
            converse(server, "tiny", 12, REPLY)
        assert e.value.status_code == 413
        err = e.value.response.json()["error"]
        assert err["code"] == "context_length_exceeded"
        assert "no longer fit the context of 512 tokens" in err["message"]
        assert server.alive()
    finally:
        server.close()
