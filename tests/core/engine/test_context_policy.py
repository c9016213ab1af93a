"""The context policy on its own: which turns stay in view, where cuts fall, what is
refused; a template stand-in counts one token per word plus one per message."""

from __future__ import annotations

import pytest

from core.engine.context_policy import (
    DROP_MIDDLE,
    DROP_OLDEST,
    REMEMBERED_CUTS,
    STOP,
    ContextFitter,
    ContextFull,
    ContextPolicy,
    reply_room,
)

SYSTEM = [{"role": "system", "content": "be brief"}]  # 3 tokens


def render(messages: list[dict]) -> list[int]:
    ids = [1]  # the assistant turn's opener
    for m in messages:
        ids.append(7)
        ids.extend(len(w) for w in m["content"].split())
    return ids


def chat(turns: int, words: int = 9) -> list[dict]:
    """`turns` exchanges of `words`-word messages, then the user's next message."""
    out = []
    for i in range(turns):
        out.append({"role": "user", "content": f"q{i} " + "w " * (words - 1)})
        out.append({"role": "assistant", "content": f"a{i} " + "w " * (words - 1)})
    out.append({"role": "user", "content": f"q{turns} " + "w " * (words - 1)})
    return out


def test_a_conversation_that_fits_is_sent_whole():
    msgs = chat(3)
    fit = ContextFitter().fit(render, SYSTEM, msgs, context=200, reserve=20)
    assert fit.ids == render(SYSTEM + msgs)
    assert fit.dropped == 0


def test_drop_oldest_keeps_the_system_prompt_and_the_latest_turns_within_the_budget():
    msgs = chat(10)  # 21 messages of 10 tokens: 214 tokens with the system prompt
    fit = ContextFitter(ContextPolicy(DROP_OLDEST, slack=0)).fit(
        render, SYSTEM, msgs, context=120, reserve=20)
    assert fit.lo == 0 and fit.hi > 0
    assert msgs[fit.hi]["role"] == "user"  # whole turns: the kept part starts with a user
    assert fit.ids == render(SYSTEM + msgs[fit.hi:])
    assert len(fit.ids) <= 100
    # the earliest cut that fits: one more turn would not
    assert len(render(SYSTEM + msgs[fit.hi - 2:])) > 100


def test_a_drop_frees_the_slack_too_so_the_next_turns_extend_the_prompt():
    fitter = ContextFitter(ContextPolicy(DROP_OLDEST, slack=0.25))
    msgs = chat(10)
    first = fitter.fit(render, SYSTEM, msgs, context=160, reserve=20)
    assert len(first.ids) <= 140 - 40  # the budget less a quarter of the context
    # the next turn fits behind the same cut: its prompt extends the previous one (the KV
    # cache of everything before is reused)
    msgs += [{"role": "assistant", "content": "a10 w w"}, {"role": "user", "content": "q11"}]
    second = fitter.fit(render, SYSTEM, msgs, context=160, reserve=20)
    assert second.hi == first.hi
    assert second.ids[:len(first.ids)] == first.ids


def test_the_cut_moves_on_only_when_the_turns_behind_it_no_longer_fit():
    fitter = ContextFitter(ContextPolicy(DROP_OLDEST, slack=0.25))
    msgs = chat(10)
    cuts = []
    for i in range(11, 40):
        cuts.append(fitter.fit(render, SYSTEM, msgs, context=160, reserve=20).hi)
        msgs += [{"role": "assistant", "content": f"a{i} " + "w " * 8},
                 {"role": "user", "content": f"q{i} " + "w " * 8}]
    assert cuts == sorted(cuts)
    moves = sum(a != b for a, b in zip(cuts, cuts[1:], strict=False))
    assert 0 < moves < len(cuts) / 2  # without the slack it would move at every turn


def test_drop_middle_keeps_the_first_exchange():
    msgs = chat(10)
    fit = ContextFitter(ContextPolicy(DROP_MIDDLE, slack=0)).fit(
        render, SYSTEM, msgs, context=120, reserve=20)
    assert (fit.lo, msgs[fit.lo]["content"]) == (2, msgs[2]["content"])
    assert fit.hi > fit.lo and msgs[fit.hi]["role"] == "user"
    assert fit.ids == render(SYSTEM + msgs[:2] + msgs[fit.hi:])
    assert len(fit.ids) <= 100


def test_stop_refuses_a_conversation_that_no_longer_fits():
    fitter = ContextFitter(ContextPolicy(STOP))
    assert fitter.fit(render, SYSTEM, chat(3), context=200, reserve=20).dropped == 0
    with pytest.raises(ContextFull, match=r"no longer fit the context of 120 tokens"):
        fitter.fit(render, SYSTEM, chat(10), context=120, reserve=20)


def test_room_for_the_reply_is_kept():
    msgs = chat(4)  # 94 tokens with the system prompt
    assert ContextFitter().fit(render, SYSTEM, msgs, context=100, reserve=1).dropped == 0
    fit = ContextFitter().fit(render, SYSTEM, msgs, context=100, reserve=25)
    assert fit.dropped > 0 and len(fit.ids) <= 75


def test_a_last_message_too_long_for_any_cut_is_refused():
    msgs = chat(2) + [{"role": "assistant", "content": "x"},
                      {"role": "user", "content": "w " * 200}]
    with pytest.raises(ContextFull, match="leave no room for a reply"):
        ContextFitter().fit(render, SYSTEM, msgs, context=120, reserve=20)


def test_cuts_are_remembered_per_conversation_and_boundedly():
    fitter = ContextFitter(ContextPolicy(DROP_OLDEST, slack=0.25))
    a, b = chat(10, words=9), chat(12, words=7)
    cut_a = fitter.fit(render, SYSTEM, a, context=160, reserve=20).hi
    fitter.fit(render, SYSTEM, b, context=160, reserve=20)  # another conversation between
    a += [{"role": "assistant", "content": "a10"}, {"role": "user", "content": "q11"}]
    assert fitter.fit(render, SYSTEM, a, context=160, reserve=20).hi == cut_a
    for n in range(REMEMBERED_CUTS + 5):
        fitter.fit(render, SYSTEM, chat(10, words=9 + n % 3) + [
            {"role": "assistant", "content": str(n)}, {"role": "user", "content": "q"}],
            context=160, reserve=20)
    assert len(fitter._cuts) <= REMEMBERED_CUTS


def test_reply_room_is_what_the_reply_may_take_up_to_a_quarter_of_the_context():
    assert reply_room(256, 2048) == 256
    assert reply_room(4096, 2048) == 512
    assert reply_room(0, 2048) == 1


def test_an_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="drop-oldest, drop-middle, stop"):
        ContextPolicy("truncate")
