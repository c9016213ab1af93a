"""Read-only Markdown text that grows to fit its content (no scroll bars of its own).

It shows a model's words: raw HTML in them is shown as text, images are not loaded (a
reply cannot make the app read a local file), and a click on a link asks first
(link_prompt.py) instead of opening the browser."""

from __future__ import annotations

import math

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QTextBlockFormat, QTextCursor, QTextDocument
from PySide6.QtWidgets import QFrame, QSizePolicy, QTextBrowser, QWidget

from app.chat import link_prompt

_FEATURES = (QTextDocument.MarkdownFeature.MarkdownDialectGitHub
             | QTextDocument.MarkdownFeature.MarkdownNoHTML)


class MarkdownView(QTextBrowser):
    """A QTextBrowser showing Markdown via QTextDocument.setMarkdown, sized to its text."""

    def __init__(self, markdown: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setOpenExternalLinks(False)
        self.setOpenLinks(False)
        self.anchorClicked.connect(lambda url: link_prompt.follow(self, url))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QTextBrowser { background: transparent; font-size: 14px; }")
        self.document().setDocumentMargin(0)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self._markdown = ""
        self.set_markdown(markdown)

    def markdown(self) -> str:
        return self._markdown

    def set_markdown(self, markdown: str) -> None:
        if markdown == self._markdown and markdown:
            return
        self._markdown = markdown
        self.document().setMarkdown(markdown, _FEATURES)
        self._space_blocks()
        self._fit()

    def _space_blocks(self) -> None:
        """Air between paragraphs and a comfortable line height (setMarkdown sets neither)."""
        doc = self.document()
        cursor = QTextCursor(doc)
        block = doc.begin()
        while block.isValid():
            fmt = block.blockFormat()
            in_list = block.textList() is not None
            nxt = block.next()
            last_item = in_list and not (nxt.isValid() and nxt.textList() is not None)
            fmt.setBottomMargin(0 if not nxt.isValid() else 4 if in_list and not last_item else 10)
            fmt.setLineHeight(135, QTextBlockFormat.LineHeightTypes.ProportionalHeight.value)
            cursor.setPosition(block.position())
            cursor.setBlockFormat(fmt)
            block = nxt

    def loadResource(self, kind: int, url: QUrl):  # noqa: N802 (Qt API)
        return None  # no images (or anything else) fetched for a reply

    def wheelEvent(self, event) -> None:  # noqa: N802 (Qt API)
        event.ignore()  # let the chat's scroll area scroll

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._fit()

    def _fit(self, *_args) -> None:
        doc = self.document()
        doc.setTextWidth(self.viewport().width())
        h = math.ceil(doc.size().height()) + 2
        if h != self.height():
            self.setFixedHeight(h)
