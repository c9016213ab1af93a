"""Theme, devices panel and composer keys, without an engine."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.chat.input_box import InputBox
from app.devices.panel import SPARK_SAMPLES, DevicesPanel
from app.theme import style_sheet, theme
from core.cluster.device_status import DeviceStatus, local_rows
from tests.app.fake_engine import fake_rank_stats


def test_both_themes_fill_every_colour(themed):
    for mode in ("dark", "light"):
        qss = style_sheet(mode)
        assert "@" not in qss
        theme().apply(themed, mode)
        assert theme().mode == mode
        assert not theme().icon("send", color="accent_text").isNull()
    assert themed.applicationName() == "TPI Chat" and not themed.windowIcon().isNull()


def test_devices_panel_cards_and_sparkline(qtbot, themed):
    panel = DevicesPanel()
    qtbot.addWidget(panel)
    devices = [DeviceStatus("laptop", "master", resident_blocks=2, budget_blocks=4),
               DeviceStatus("mini-pc", rtt_ms=3.0, tokens_per_s=9.5)]
    for i in range(SPARK_SAMPLES + 10):
        devices[1].rtt_ms = 1.0 + i
        panel.update_devices(devices)
    assert list(panel.cards) == ["laptop", "mini-pc"]
    assert len(panel.cards["mini-pc"].spark.samples) == SPARK_SAMPLES
    assert "9.5 tok/s" in panel.cards["mini-pc"].rtt_label.text()
    assert panel.cards["laptop"].memory.fraction == 0.5
    panel.update_devices(devices[:1])
    assert list(panel.cards) == ["laptop"]
    panel.grab()  # paints bars and sparklines without error


def test_rank_stats_become_device_statuses():
    out = local_rows([fake_rank_stats(0), fake_rank_stats(1)], busy=True, tokens_per_s=4.0)
    assert [d.role for d in out] == ["master", "worker"]
    assert [d.name for d in out] == ["This device", "Local rank 1"]
    assert out[0].state == "busy" and out[0].budget_bytes == 6 << 20
    assert out[1].share == "2 KV heads (50%) \u00b7 96 MLP columns"
    assert (out[1].resident_blocks, out[1].resident_bytes, out[1].tokens_per_s) == (
        4, 4 << 20, 4.0)


def test_enter_sends_and_shift_enter_adds_a_line(qtbot, themed):
    box = InputBox()
    qtbot.addWidget(box)
    sent: list[str] = []
    box.submitted.connect(sent.append)
    qtbot.keyClicks(box.editor, "line one")
    qtbot.keyClick(box.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(box.editor, "line two")
    qtbot.keyClick(box.editor, Qt.Key.Key_Return)
    assert sent == ["line one\nline two"] and box.text() == ""
    box.set_busy(True)
    stops: list[bool] = []
    box.stop_requested.connect(lambda: stops.append(True))
    qtbot.keyClicks(box.editor, "more")
    qtbot.keyClick(box.editor, Qt.Key.Key_Return)
    assert sent == ["line one\nline two"]  # no sending while a reply streams
    qtbot.keyClick(box.editor, Qt.Key.Key_Escape)
    assert stops == [True]


def test_chat_view_says_what_a_reply_on_its_way_is_doing(qtbot, themed):
    """The controller talks to the chat view through its methods, not to its bubbles."""
    from app.chat.view import ChatView

    view = ChatView()
    qtbot.addWidget(view)
    view.show_status("Waiting for the model to load\u2026")
    bubble = view.streaming
    assert bubble is not None and bubble.typing.text().startswith("Waiting")
    view.show_status("Thinking\u2026")
    assert view.streaming is bubble and bubble.typing.text() == "Thinking\u2026"
    view.fail_stream("partial", "device 'x' stopped answering")
    assert view.streaming is None
    assert bubble.text() == "partial" and "stopped answering" in bubble.error_label.text()
    view.fail_stream("", "No model is loaded")  # no reply in progress: a new bubble says it
    assert view.messages[-1] is not bubble and "No model" in view.messages[-1].error_label.text()
