"""Links in a model's reply: a click shows the whole address and asks; nothing opens on its
own, odd schemes never open; raw HTML and images in a reply are not rendered."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QObject, QPoint, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtTest import QTest

from app.chat import link_prompt
from app.chat.markdown_view import MarkdownView


class _Browser(QObject):
    """Stands in for the browser: QDesktopServices.openUrl hands https/file URLs here."""

    def __init__(self):
        super().__init__()
        self.opened: list[str] = []

    @Slot(QUrl)
    def take(self, url: QUrl) -> None:
        self.opened.append(url.toString())


@pytest.fixture
def browser():
    b = _Browser()
    for scheme in ("https", "file"):
        QDesktopServices.setUrlHandler(scheme, b, "take")
    yield b
    for scheme in ("https", "file"):
        QDesktopServices.unsetUrlHandler(scheme)


def _click_link(qtbot, view: MarkdownView) -> None:
    qtbot.waitExposed(view)
    y = view.fontMetrics().height() // 2 + 1
    for x in range(0, view.viewport().width(), 3):
        if view.anchorAt(QPoint(x, y)):
            QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, y))
            return
    raise AssertionError("no link found in the view")


def _view(qtbot, text: str) -> MarkdownView:
    view = MarkdownView(text)
    qtbot.addWidget(view)
    view.resize(500, 80)
    view.show()
    return view


def test_a_link_opens_only_after_the_user_saw_its_address(qtbot, browser, monkeypatch):
    asked: list[str] = []
    answer = [link_prompt.CANCEL]
    monkeypatch.setattr(link_prompt, "ask_user",
                        lambda _parent, url: asked.append(link_prompt.shown(url)) or answer[0])
    # The text says one thing, the address another (a look-alike host, in punycode).
    view = _view(qtbot, "See [your bank](https://b\u00e4nk.example/login?next=x) now")
    _click_link(qtbot, view)
    assert asked == ["https://xn--bnk-qla.example/login?next=x"]
    qtbot.wait(100)
    assert browser.opened == []  # cancelled: nothing opened
    answer[0] = link_prompt.OPEN
    _click_link(qtbot, view)
    qtbot.waitUntil(lambda: bool(browser.opened), timeout=2000)
    assert browser.opened == ["https://xn--bnk-qla.example/login?next=x"]


def test_other_schemes_can_be_copied_but_not_opened(qtbot, browser, monkeypatch):
    monkeypatch.setattr(link_prompt, "ask_user", lambda _parent, url: link_prompt.OPEN)
    view = _view(qtbot, "[notes](file:///etc/passwd)")
    _click_link(qtbot, view)
    qtbot.wait(100)
    assert browser.opened == []
    monkeypatch.setattr(link_prompt, "ask_user", lambda _parent, url: link_prompt.COPY)
    _click_link(qtbot, view)
    from PySide6.QtGui import QGuiApplication
    assert QGuiApplication.clipboard().text() == "file:///etc/passwd"


def test_the_dialog_shows_the_address_as_text(qtbot, monkeypatch):
    seen = {}

    def fake_exec(box):
        seen["text"], seen["format"] = box.text(), box.textFormat()
        seen["buttons"] = [b.text() for b in box.buttons()]
        return 0

    monkeypatch.setattr("PySide6.QtWidgets.QMessageBox.exec", fake_exec)
    url = QUrl("https://example.org/<b>x</b>")
    assert link_prompt.ask_user(None, url) == link_prompt.CANCEL
    assert "https://example.org/%3Cb%3Ex%3C/b%3E" in seen["text"]
    assert seen["format"] == Qt.TextFormat.PlainText
    assert "Open" in seen["buttons"]
    link_prompt.ask_user(None, QUrl("myapp://do-something"))
    assert "Open" not in seen["buttons"] and "cannot be opened" in seen["text"]


def test_html_in_a_reply_is_shown_as_text_and_images_are_not_loaded(qtbot, tmp_path):
    img = tmp_path / "secret.png"
    img.write_bytes(b"\x89PNG\r\n\x1a\n")
    view = _view(qtbot, f'Hi <b>there</b> <img src="{img}"> ![x]({img.as_uri()})')
    assert "<b>there</b>" in view.toPlainText()
    assert view.loadResource(2, QUrl.fromLocalFile(str(img))) is None
