"""A chat far longer than the context through `tpi-chat serve` and the openai client: the
oldest turns drop out of view (X-Messages-Out-Of-View), every turn is answered with room
for its reply, the KV of what stays is reused, and the server's memory stays flat."""

from __future__ import annotations

import re
import time

import pytest

from core.engine.context_policy import reply_room
from tests.fixtures.long_chat import (
    SETUPS,
    START_S,
    TINY,
    TURNS,
    Setup,
    check_flat,
    model_for,
    rss_mb,
    user_turn,
)
from tests.fixtures.serve import ServeProcess

REPLY_LINE = re.compile(r"(\d+) prompt tokens \((\d+) cached\)")


def serve(setup: Setup, model, *extra: str) -> ServeProcess:
    return ServeProcess(*(("--model", str(model)) if model else ()), "--threads", "1",
                        "--speculate", "off", "--context", str(setup.context), *extra,
                        timeout=START_S)


def converse(server: ServeProcess, turns: int, reply: int):
    """(out-of-view count, choice, usage, RSS MB) after each turn of one conversation."""
    import openai

    client = openai.OpenAI(base_url=server.api, api_key="none", max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    messages = [{"role": "system", "content": "You tell long stories."}]
    seen = []
    for i in range(turns):
        messages.append({"role": "user", "content": user_turn(i)})
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, temperature=0, max_tokens=reply)
        r = raw.parse()
        messages.append({"role": "assistant", "content": r.choices[0].message.content})
        seen.append((int(raw.headers["x-messages-out-of-view"]), r.choices[0], r.usage,
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


@pytest.mark.parametrize("setup", SETUPS)
def test_forty_long_turns_through_the_api(setup, tmp_path_factory):
    server = serve(setup, model_for(setup, tmp_path_factory))
    try:
        seen = converse(server, TURNS, setup.reply)
        log = reply_log(server, TURNS)
    finally:
        server.close()
    dropped = [d for d, _, _, _ in seen]
    assert dropped == sorted(dropped) and dropped[0] == 0 and dropped[-1] >= TURNS, dropped
    for _, choice, usage, _ in seen:  # every prompt left the reply its room
        assert usage.prompt_tokens <= setup.context - reply_room(setup.reply, setup.context)
        assert usage.completion_tokens == setup.reply or choice.finish_reason == "stop"
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
    print(check_flat([r for _, _, _, r in seen], first))


def test_the_stop_policy_refuses_with_413(tmp_path_factory):
    import openai

    server = serve(TINY, model_for(TINY, tmp_path_factory), "--context-overflow", "stop")
    try:
        with pytest.raises(openai.APIStatusError) as e:
            converse(server, 12, TINY.reply)
        assert e.value.status_code == 413
        err = e.value.response.json()["error"]
        assert err["code"] == "context_length_exceeded"
        assert "no longer fit the context of 512 tokens" in err["message"]
        assert server.alive()
    finally:
        server.close()
