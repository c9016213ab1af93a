"""The app through a conversation far longer than its context, on the real engine: every
turn is answered, a marker shows where older messages fell out of the model's view, and
the process's memory stays flat; plus the Context settings."""

from __future__ import annotations

import psutil
import pytest

from app.engine.worker import default_loader
from app.store.settings_keys import CONTEXT, CONTEXT_OVERFLOW
from tests.app.conftest import caught, close_window, open_window, send
from tests.fixtures import long_chat as lc


def marker_place(w) -> tuple[int, str] | None:
    """(index of the message just below the marker, its text), or None."""
    view = w.chat_view
    m = view.marker
    if m is None or not m.isVisible():
        return None
    at = view.layout_.indexOf(m)
    below = view.layout_.itemAt(at + 1).widget()
    return view.messages.index(below), m.label.text()


@pytest.mark.parametrize("setup", lc.SETUPS)
def test_forty_long_turns_in_the_app(qtbot, setup, tmp_path_factory, monkeypatch):
    monkeypatch.setattr("core.engine.options.usable_cores", lambda: 1)  # a loaded CI box
    model = lc.model_for(setup, tmp_path_factory)
    greedy = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": setup.reply,
              "repetition_penalty": 1.0}
    w = open_window(qtbot, default_loader, model=str(model) if model else None,
                    sampling=greedy, context=setup.context, ranks=1, speculate="off",
                    wait_ready=False)
    qtbot.waitUntil(lambda: w.controller.ready, timeout=lc.START_S * 1000)
    assert w.run_options().context == setup.context
    qtbot.waitUntil(lambda: f"In use: {setup.context} tokens" in w.settings.context.note.text(),
                    timeout=5000)
    me = psutil.Process()
    rss, places, replies = [], [], []
    w.engine.worker.finished.connect(replies.append)
    for i in range(lc.TURNS):
        send(qtbot, w, lc.user_turn(i), timeout=600000)
        assert len(replies) == i + 1, w.controller.last_error
        rss.append(me.memory_info().rss / 2**20)
        places.append(marker_place(w))
    # each reply had its room: it ran to its limit or ended by itself
    assert all(r.new_tokens == setup.reply or r.stop_reason == "eos" for r in replies)
    first = next(i for i, p in enumerate(places) if p)
    assert 1 < first < lc.TURNS - 10, places
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
    print(lc.check_flat(rss, first))
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


def test_the_apps_api_server_fits_chats_by_the_apps_setting(qtbot, tmp_path_factory,
                                                            monkeypatch):
    import socket

    import openai

    monkeypatch.setattr("core.engine.options.usable_cores", lambda: 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = open_window(qtbot, default_loader, model=str(lc.model_for(lc.TINY, tmp_path_factory)),
                    context=512, context_overflow="stop", speculate="off",
                    api_server={"enabled": True, "port": port, "api_key": "", "lan": False})
    qtbot.waitUntil(lambda: bool(w.engine.api.state.url), timeout=30000)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                           max_retries=0, timeout=120)
    messages = []
    for i in range(12):  # ~60 tokens each: more than the context
        messages += [{"role": "user", "content": lc.user_turn(i)},
                     {"role": "assistant", "content": lc.user_turn(i + 100)}]
    messages.append({"role": "user", "content": lc.user_turn(12)})
    ask = dict(model=client.models.list().data[0].id, messages=messages, max_tokens=8,
               temperature=0)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(**ask)
    assert e.value.status_code == 413
    box = w.settings.context
    with caught(qtbot, w.engine.api.changed, timeout=30000,
                check=lambda state: bool(state.url)):  # restarted
        box.overflow.setCurrentIndex(box.overflow.findData("drop-oldest"))
    raw = client.chat.completions.with_raw_response.create(**ask)
    assert int(raw.headers["x-messages-out-of-view"]) > 0
    assert raw.parse().usage.prompt_tokens <= 512 - 8
    close_window(w)
