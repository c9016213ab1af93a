"""The app through a conversation far longer than its context, on the real engine: every
turn is answered, a marker shows where older messages fell out of the model's view, and
the process's memory stays flat; plus the Context settings."""

from __future__ import annotations

import psutil
import pytest

from app.engine.worker import default_loader
from app.store.settings_keys import CONTEXT, CONTEXT_OVERFLOW
from tests.app.conftest import close_window, open_window, send
from tests.fixtures.long_chat import SETUPS, TURNS, check_flat, model_for, user_turn


def marker_place(w) -> tuple[int, str] | None:
    """(index of the message just below the marker, its text), or None."""
    view = w.chat_view
    m = view.marker
    if m is None or not m.isVisible():
        return None
    at = view.layout_.indexOf(m)
    below = view.layout_.itemAt(at + 1).widget()
    return view.messages.index(below), m.label.text()


@pytest.mark.parametrize("setup", SETUPS)
def test_forty_long_turns_in_the_app(qtbot, setup, tmp_path_factory, monkeypatch):
    monkeypatch.setattr("core.engine.options.usable_cores", lambda: 1)  # a loaded CI box
    model = model_for(setup, tmp_path_factory)
    greedy = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": setup.reply,
              "repetition_penalty": 1.0}
    w = open_window(qtbot, default_loader, model=str(model) if model else None,
                    sampling=greedy, context=setup.context, ranks=1, speculate="off")
    assert w.run_options().context == setup.context
    qtbot.waitUntil(lambda: f"In use: {setup.context} tokens" in w.settings.context.note.text(),
                    timeout=5000)
    me = psutil.Process()
    rss, places, replies = [], [], []
    w.engine.worker.finished.connect(replies.append)
    for i in range(TURNS):
        send(qtbot, w, user_turn(i), timeout=600000)
        assert len(replies) == i + 1, w.controller.last_error
        rss.append(me.memory_info().rss / 2**20)
        places.append(marker_place(w))
    # each reply had its room: it ran to its limit or ended by itself
    assert all(r.new_tokens == setup.reply or r.stop_reason == "eos" for r in replies)
    first = next(i for i, p in enumerate(places) if p)
    assert 1 < first < TURNS - 10, places
    index, text = places[-1]
    lo, hi = replies[-1].out_of_view
    assert (lo, index) == (0, hi) and w.chat_view.messages[index].role == "user"
    assert text == f"\u2191 {hi} messages above are out of the model's view"
    # reopening the conversation shows the marker in the same place
    conv = w.controller.conv_id
    w.new_chat()
    assert w.chat_view.marker is None
    w.open_conversation(conv)
    assert marker_place(w) == places[-1]
    print(check_flat(rss, first))
    close_window(w)


def test_the_context_settings_are_saved_and_the_length_reloads(qtbot):
    from tests.app.fake_engine import FakeLoader

    loader = FakeLoader()
    seen = []
    w = open_window(qtbot, lambda m, opts, p, **k: (seen.append(opts.context),
                                                    loader(m, opts, p, **k))[1])
    assert seen == [CONTEXT.default]
    box = w.settings.context
    box.length.setValue(2048)
    box._apply_now()
    qtbot.waitUntil(lambda: seen == [CONTEXT.default, 2048] and w.controller.ready,
                    timeout=10000)
    assert CONTEXT.get(w.store) == 2048
    box.overflow.setCurrentIndex(box.overflow.findData("stop"))
    assert CONTEXT_OVERFLOW.get(w.store) == "stop"
    assert w.engine.worker._policy.overflow == "stop"
    assert len(seen) == 2  # the policy needs no reload
    close_window(w)
