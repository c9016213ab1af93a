"""Text a peer wrote (a device's name, a worker's error) is shown as written wherever the
app puts it: a name full of HTML cannot draw images, links or layout in the window."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from app.chat.message_widget import MessageWidget
from app.devices.panel import DeviceCard
from app.plain_text import ask, tip, warn
from app.status_bar import StatusBar
from core.cluster.device_status import DeviceStatus

EVIL = ('<img src="x" width="900" height="300"><a href="https://evil.example">'
        "click me</a><h1>mini-pc</h1>")


def _as_plain(qtbot, label: QLabel) -> bool:
    """Does `label` render its text as a plain-text label of the same text would?"""
    ref = QLabel(label.parentWidget())  # same parent, name and style: the same font
    ref.setObjectName(label.objectName())
    ref.setStyleSheet(label.styleSheet())
    ref.setTextFormat(Qt.TextFormat.PlainText)
    ref.setWordWrap(label.wordWrap())
    ref.setTextInteractionFlags(label.textInteractionFlags())
    ref.setText(label.text())
    return label.sizeHint() == ref.sizeHint()


def test_labels_that_show_peer_text_render_it_as_text(qtbot):
    bar = StatusBar()
    qtbot.addWidget(bar)
    bar.note(f"Removed \u201c{EVIL}\u201d.")
    msg = MessageWidget("assistant")
    qtbot.addWidget(msg)
    msg.set_error(f"Device {EVIL} failed: {EVIL}")
    card = DeviceCard(EVIL)
    qtbot.addWidget(card)
    card.update_status(DeviceStatus(EVIL, state=EVIL, share=EVIL))
    for label in (bar.stage, msg.error_label, card.title, card.role, card.share):
        assert EVIL in label.text()
        assert _as_plain(qtbot, label), label


def test_tooltips_and_dialogs_keep_peer_text_as_text(qtbot, monkeypatch):
    assert "&lt;img" in tip(EVIL) and "<img" not in tip(EVIL)
    seen = []
    monkeypatch.setattr("PySide6.QtWidgets.QMessageBox.exec",
                        lambda box: seen.append((box.text(), box.textFormat())) or 0)
    ask(None, "Remove device", f"Remove \u201c{EVIL}\u201d?")
    warn(None, "Could not load the model", EVIL)
    assert [f for _, f in seen] == [Qt.TextFormat.PlainText] * 2
    assert all(EVIL in t for t, _ in seen)
