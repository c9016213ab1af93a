"""The main window driven by a fast fake backend: send, stream, stop, edit, persist."""

from __future__ import annotations

import threading

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from app.chat.code_block import CodeBlock
from core.progress import DeviceStage
from tests.app.conftest import caught, close_window, open_window, send
from tests.app.fake_engine import FakeLoader


def test_send_streams_reply_and_shows_speed(qtbot):
    loader = FakeLoader(delay=0.002)
    w = open_window(qtbot, loader)
    assert w.windowTitle() == "TPI Chat"
    tokens: list[str] = []
    w.engine.worker.token.connect(tokens.append)
    send(qtbot, w, "hello tensor world")
    assert len(tokens) == 5  # streamed piece by piece
    last = w.chat_view.messages[-1]
    assert last.role == "assistant" and last.text() == "You said: hello tensor world"
    assert "tok/s" in w.status.speed.text() and "TTFT" in w.status.speed.text()
    assert w.status.model.text() == "Fake-Model" and w.status.cluster.text() == "2 ranks"
    conv = w.controller.conv_id
    assert w.store.conversation(conv).title == "hello tensor world"
    assert [m.role for m in w.store.messages(conv)] == ["user", "assistant"]
    # the engine ran on its own thread, never on the GUI thread
    assert w.engine.worker.torch_thread_ids
    assert threading.get_ident() not in w.engine.worker.torch_thread_ids
    assert threading.get_ident() not in loader.load_threads
    close_window(w)


def test_stop_ends_reply_and_keeps_partial_text(qtbot):
    loader = FakeLoader(script=lambda t: ["word"] * 2000, delay=0.005)
    w = open_window(qtbot, loader)
    w.composer.editor.setPlainText("go on")
    qtbot.keyClick(w.composer.editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: w.controller.stream and len(w.controller.stream.text) > 20)
    conv, msg_id = w.controller.conv_id, w.controller.stream.msg_id
    # the streaming reply is saved to the database before it ends
    qtbot.waitUntil(lambda: len(next(m for m in w.store.messages(conv)
                                     if m.id == msg_id).content) > 0, timeout=3000)
    with caught(qtbot, w.engine.worker.finished, timeout=5000) as blocker:
        qtbot.keyClick(w.composer.editor, Qt.Key.Key_Escape)
    stats = blocker.args[0]
    assert stats.stop_reason == "stopped" and 0 < stats.new_tokens < 2000
    qtbot.waitUntil(lambda: not w.controller.busy)
    saved = w.store.messages(conv)[-1]
    assert saved.role == "assistant" and saved.content == stats.text
    assert "stopped" in w.chat_view.messages[-1].stats_label.text()
    close_window(w)


def test_conversation_persists_across_windows(qtbot, tmp_path):
    db = tmp_path / "chats.sqlite3"
    w = open_window(qtbot, FakeLoader(), db_path=db)
    send(qtbot, w, "remember me")
    w.settings.system_prompt.setPlainText("Be terse.")
    conv = w.controller.conv_id
    close_window(w)

    w2 = open_window(qtbot, FakeLoader(), db_path=db)
    assert w2.conversations.ids() == [conv]
    assert w2.controller.conv_id == conv
    assert [m.text() for m in w2.chat_view.messages] == ["remember me", "You said: remember me"]
    assert w2.settings.system_prompt.toPlainText() == "Be terse."
    close_window(w2)


def test_rename_delete_and_search(qtbot):
    w = open_window(qtbot, FakeLoader())
    send(qtbot, w, "alpha question")
    qtbot.keyClick(w, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    send(qtbot, w, "beta question")
    assert w.conversations.titles() == ["beta question", "alpha question"]
    beta = w.controller.conv_id
    w.rename_conversation(beta, "Renamed beta")
    assert w.store.conversation(beta).title == "Renamed beta"
    w.conversations.search.setText("ALPHA")
    assert w.conversations.titles() == ["alpha question"]
    w.conversations.search.setText("")
    w.delete_conversation(beta)
    assert w.conversations.titles() == ["alpha question"]
    assert w.store.conversation(beta) is None
    assert w.chat_view.messages[0].text() == "alpha question"  # moved to what remains
    close_window(w)


def test_inline_rename_through_the_list(qtbot):
    w = open_window(qtbot, FakeLoader())
    send(qtbot, w, "first")
    item = w.conversations.model.item(0)
    item.setText("Edited in place")
    conv = w.controller.conv_id
    qtbot.waitUntil(lambda: w.store.conversation(conv).title == "Edited in place")
    assert w.conversations.titles() == ["Edited in place"]
    close_window(w)


def test_code_block_copy_button(qtbot):
    reply = ["Here:\n```python\nprint('hi')\nx = 1\n```\nDone."]
    w = open_window(qtbot, FakeLoader(script=lambda t: reply))
    send(qtbot, w, "code please")
    blocks = w.chat_view.messages[-1].code_blocks()
    assert len(blocks) == 1 and isinstance(blocks[0], CodeBlock)
    assert blocks[0].lang_label.text() == "python"
    QGuiApplication.clipboard().clear()
    qtbot.mouseClick(blocks[0].copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "print('hi')\nx = 1"
    assert blocks[0].copy_button.text() == "Copied"
    close_window(w)


def test_regenerate_and_edit_last_message(qtbot):
    loader = FakeLoader()
    w = open_window(qtbot, loader)
    w.settings.system_prompt.setPlainText("Sys A")
    send(qtbot, w, "one")
    send(qtbot, w, "two")
    conv = w.controller.conv_id
    w.chat_view.messages[-1].regen_button.click()
    qtbot.waitUntil(lambda: not w.controller.busy)
    session = loader.sessions[-1]
    system, history, text = session.seen[-1]
    assert system == "Sys A" and text == "two" and [m["content"] for m in history] == [
        "one", "You said: one"]
    assert len(w.store.messages(conv)) == 4
    w.chat_view.messages[-2].edit_button.click()
    assert w.composer.editing and w.composer.text() == "two"
    w.composer.editor.setPlainText("TWO!")
    qtbot.keyClick(w.composer.editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.controller.busy)
    assert [m.content for m in w.store.messages(conv)] == [
        "one", "You said: one", "TWO!", "You said: TWO!"]
    assert [m.text() for m in w.chat_view.messages][-2:] == ["TWO!", "You said: TWO!"]
    close_window(w)


def test_message_sent_while_loading_waits_for_the_model(qtbot):
    w = open_window(qtbot, FakeLoader(load_s=0.5), wait_ready=False)
    w.composer.editor.setPlainText("early bird")
    qtbot.keyClick(w.composer.editor, Qt.Key.Key_Return)
    assert w.controller.queued
    qtbot.waitUntil(lambda: w.controller.ready and not w.controller.busy
                    and not w.controller.queued, timeout=10000)
    assert w.chat_view.messages[-1].text() == "You said: early bird"
    close_window(w)


def test_cancel_loading_discards_the_model(qtbot):
    loader = FakeLoader(load_s=1.0)
    w = open_window(qtbot, loader, wait_ready=False)
    qtbot.waitUntil(lambda: w.status.progress.isVisible())
    with caught(qtbot, w.engine.worker.load_cancelled, timeout=5000):
        w.status.cancel.click()
    assert not w.status.progress.isVisible() and not w.controller.ready
    close_window(w)


def test_devices_panel_shows_ranks(qtbot):
    w = open_window(qtbot, FakeLoader(world_size=3))
    qtbot.waitUntil(lambda: len(w.devices.cards) == 3, timeout=5000)
    card = w.devices.cards["This device"]
    assert "master" in card.role.text() and "4/6 blocks" in card.memory_label.text()
    assert abs(card.memory.fraction - 4 / 6) < 1e-6
    close_window(w)


def test_device_progress_comes_from_the_stage_field_not_its_text(qtbot):
    """A DeviceStage reaches the device's card by its `device` field; stage text that only
    looks like shipping names no device."""

    class ShippingLoader(FakeLoader):
        def __call__(self, model, opts, progress, **devices):
            progress(DeviceStage("sending shards to the mini PC", "mini-pc"), 5, 10)
            progress("sending shards to 'laptop'", 1, 2)
            return super().__call__(model, opts, progress, **devices)

    w = open_window(qtbot, ShippingLoader())
    stages: list[tuple] = []
    shipped: list[tuple] = []
    w.engine.worker.loading_progress.connect(lambda *a: stages.append(a))
    w.engine.worker.device_progress.connect(lambda *a: shipped.append(a))
    w.load_model(None)  # again, now with both signals recorded from its start
    qtbot.waitUntil(lambda: w.controller.ready, timeout=10_000)
    assert shipped == [("mini-pc", 5, 10)]
    assert ("sending shards to the mini PC", 5, 10) in stages
    assert ("sending shards to 'laptop'", 1, 2) in stages
    close_window(w)


def test_export_markdown(qtbot, tmp_path):
    w = open_window(qtbot, FakeLoader())
    send(qtbot, w, "export me")
    out = w.export_conversation(w.controller.conv_id, str(tmp_path / "chat.md"))
    text = out.read_text()
    assert text.startswith("# export me") and "You said: export me" in text
    close_window(w)
