"""`tpi-chat chat` through a conversation far longer than its context: older turns fall out
of view (it says so), every turn gets a reply, and the process's memory stays flat."""

from __future__ import annotations

import re

import pytest

from tests.fixtures.cli import ChatProcess
from tests.fixtures.long_chat import (
    SETUPS,
    START_S,
    TINY,
    TURNS,
    check_flat,
    model_for,
    rss_mb,
    user_turn,
)

STATS = r"\[[\d.]+ tokens/s, first token after \d+ ms, 1 rank[^\]]*\]\n"
MARKER = re.compile(r"\[(\d+) earlier messages are out of the model's view from here on\]")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return model_for(TINY, tmp_path_factory)


def converse(chat: ChatProcess, turns: int) -> tuple[list[str], list[float]]:
    """Each turn's output and the process's RSS (MB) after it."""
    chat.wait_for(r"you> ", timeout=START_S)
    outputs, rss = [], []
    for i in range(turns):
        mark = chat.say(user_turn(i))
        end = chat.wait_for(STATS + r"(?:.*\n)?\nyou> ", since=mark, timeout=300).end()
        outputs.append(chat.out[mark:mark + end])
        rss.append(rss_mb(chat.proc.pid))
    return outputs, rss


@pytest.mark.parametrize("setup", SETUPS)
def test_forty_long_turns_run_to_the_end_with_older_turns_out_of_view(setup, tmp_path,
                                                                      tmp_path_factory):
    model = model_for(setup, tmp_path_factory)
    chat = ChatProcess(tmp_path, *(("--model", str(model)) if model else ()),
                       "--threads", "1", "--temperature", "0", "--speculate", "off",
                       "--context", str(setup.context), "--max-new-tokens", str(setup.reply))
    try:
        outputs, rss = converse(chat, TURNS)
    finally:
        chat.close()
    dropped = [int(m.group(1)) if (m := MARKER.search(o)) else None for o in outputs]
    first = next(i for i, d in enumerate(dropped) if d is not None)
    assert 1 < first < TURNS - 10, dropped
    shown = [d for d in dropped if d is not None]
    assert shown == sorted(shown) and shown[-1] >= TURNS, dropped
    print(check_flat(rss, first))


def test_the_stop_policy_says_so_and_the_chat_goes_on(tiny, tmp_path):
    chat = ChatProcess(tmp_path, "--model", str(tiny), "--threads", "1", "--context",
                       "512", "--max-new-tokens", "64", "--context-overflow", "stop")
    try:
        chat.wait_for(r"context 512 tokens", timeout=180)
        for i in range(12):
            mark = chat.say(user_turn(i))
            m = chat.wait_for(STATS + r"|no longer fit[^\n]*\n", since=mark)
            if "no longer fit" in m.group(0):
                break
        else:
            pytest.fail("the conversation never outgrew the context")
        assert "/new starts a new chat" in chat.out[mark:]
        chat.say("/new")
        mark = chat.say(user_turn(0))
        chat.wait_for(STATS, since=mark)
    finally:
        chat.close()
    assert chat.proc.returncode == 0


def test_a_context_over_the_models_maximum_is_capped_and_said(tiny, tmp_path):
    chat = ChatProcess(tmp_path, "--model", str(tiny), "--threads", "1", "--context",
                       "100000")
    try:
        chat.wait_for(r"context 512 tokens \(the model's maximum; --context asked 100000\)",
                      timeout=180)
    finally:
        chat.close()
