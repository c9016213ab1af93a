"""One chat message: a user bubble on the right, or an assistant reply rendered as Markdown.

An assistant reply is a stack of MarkdownView (prose) and CodeBlock (fenced code) widgets,
updated in place while it streams, with an action row (Copy, Regenerate) and its speed.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.chat.code_block import CodeBlock
from app.chat.markdown_blocks import split_blocks
from app.chat.markdown_view import MarkdownView
from app.plain_text import plain
from app.theme import app_icon, theme

CURSOR = " \u258d"  # the block cursor shown at the end of a streaming reply


def _action_button(text: str, icon: str, tip: str) -> QToolButton:
    b = QToolButton()
    b.setObjectName("ActionButton")
    b.setText(text)
    b.setToolTip(tip)
    b.setIcon(theme().icon(icon, size=14))
    b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    b.setCursor(Qt.CursorShape.PointingHandCursor)
    return b


class MessageWidget(QWidget):
    """A message of `role` "user" or "assistant"."""

    regenerate_requested = Signal()
    edit_requested = Signal()

    def __init__(self, role: str, text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.role = role
        self._text = ""
        self._streaming = False
        self._blocks: list[QWidget] = []
        if role == "user":
            self._build_user()
        else:
            self._build_assistant()
        self.set_text(text)

    # building ------------------------------------------------------------------------
    def _build_user(self) -> None:
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 6, 0, 6)
        row.addStretch(1)
        col = QVBoxLayout()
        col.setSpacing(2)
        self.bubble = QWidget(self)
        self.bubble.setObjectName("UserBubble")
        self.bubble.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        bl = QVBoxLayout(self.bubble)
        bl.setContentsMargins(14, 10, 14, 10)
        self.label = QLabel(self.bubble)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setWordWrap(True)
        font = self.label.font()
        font.setPixelSize(14)
        self.label.setFont(font)
        self._max_bubble = 640
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bl.addWidget(self.label)
        col.addWidget(self.bubble, 0, Qt.AlignmentFlag.AlignRight)
        actions = QHBoxLayout()
        actions.addStretch(1)
        self.copy_button = _action_button("", "copy", "Copy message")
        self.copy_button.clicked.connect(self.copy_text)
        self.edit_button = _action_button("Edit", "edit", "Edit and resend")
        self.edit_button.clicked.connect(self.edit_requested)
        self.edit_button.hide()
        actions.addWidget(self.edit_button)
        actions.addWidget(self.copy_button)
        col.addLayout(actions)
        row.addLayout(col, 5)

    def _build_assistant(self) -> None:
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 6, 0, 6)
        row.setSpacing(12)
        avatar = QLabel(self)
        avatar.setPixmap(app_icon().pixmap(28, 28))
        avatar.setFixedSize(28, 28)
        row.addWidget(avatar, 0, Qt.AlignmentFlag.AlignTop)
        col = QVBoxLayout()
        col.setSpacing(6)
        name = QLabel("Assistant", self)
        name.setStyleSheet("font-weight: 600;")
        col.addWidget(name)
        self.content = QVBoxLayout()
        self.content.setSpacing(8)
        col.addLayout(self.content)
        self.typing = QLabel("Thinking\u2026", self)  # what a reply on its way is doing
        self.typing.setObjectName("Muted")
        self.typing.hide()
        col.addWidget(self.typing)
        self.error_label = QLabel(self)
        self.error_label.setObjectName("ErrorNote")
        self.error_label.setWordWrap(True)
        plain(self.typing, self.error_label)  # errors may quote a worker's words
        self.error_label.hide()
        col.addWidget(self.error_label)
        actions = QHBoxLayout()
        actions.setSpacing(2)
        self.copy_button = _action_button("Copy", "copy", "Copy reply as Markdown")
        self.copy_button.clicked.connect(self.copy_text)
        self.regen_button = _action_button("Regenerate", "regenerate", "Generate this reply again")
        self.regen_button.clicked.connect(self.regenerate_requested)
        self.regen_button.hide()
        self.stats_label = QLabel(self)
        self.stats_label.setObjectName("Muted")
        self.stats_label.setStyleSheet("font-size: 12px;")
        actions.addWidget(self.copy_button)
        actions.addWidget(self.regen_button)
        actions.addSpacing(8)
        actions.addWidget(self.stats_label)
        actions.addStretch(1)
        col.addLayout(actions)
        row.addLayout(col, 1)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    # state ---------------------------------------------------------------------------
    def text(self) -> str:
        return self._text

    def set_text(self, text: str) -> None:
        """Show `text` (re-rendering only the blocks that changed)."""
        self._text = text
        if self.role == "user":
            self.label.setText(text)
            self._fit_bubble()
            return
        blocks = split_blocks(text)
        if self._streaming and blocks and blocks[-1].kind == "markdown":
            last = blocks[-1]
            blocks[-1] = type(last)("markdown", last.text + CURSOR)
        self.typing.setVisible(self._streaming and not blocks)
        for i, block in enumerate(blocks):
            widget = self._blocks[i] if i < len(self._blocks) else None
            wanted = CodeBlock if block.kind == "code" else MarkdownView
            if not isinstance(widget, wanted):
                for w in self._blocks[i:]:
                    self.content.removeWidget(w)
                    w.deleteLater()
                del self._blocks[i:]
                widget = CodeBlock() if block.kind == "code" else MarkdownView()
                self.content.addWidget(widget)
                self._blocks.append(widget)
            if isinstance(widget, CodeBlock):
                widget.set_code(block.text, block.lang)
            else:
                widget.set_markdown(block.text)
        for w in self._blocks[len(blocks):]:
            self.content.removeWidget(w)
            w.deleteLater()
        del self._blocks[len(blocks):]

    def set_status(self, text: str) -> None:
        """What the reply is doing before its first token ("Thinking…")."""
        self.typing.setText(text)

    def set_streaming(self, streaming: bool) -> None:
        self._streaming = streaming
        if self.role == "assistant":
            self.copy_button.setVisible(not streaming)
            if streaming:
                self.regen_button.hide()
                self.stats_label.clear()
            self.set_text(self._text)

    def set_last(self, last: bool) -> None:
        """Only the last message offers Regenerate (assistant) or Edit (user)."""
        if self.role == "user":
            self.edit_button.setVisible(last)
        else:
            self.regen_button.setVisible(last and not self._streaming)

    def set_stats(self, text: str) -> None:
        if self.role == "assistant":
            self.stats_label.setText(text)

    def set_error(self, message: str) -> None:
        if self.role == "assistant":
            self.error_label.setText(message)
            self.error_label.setVisible(bool(message))

    def set_max_bubble_width(self, width: int) -> None:
        if self.role == "user":
            self._max_bubble = max(120, width)
            self._fit_bubble()

    def _fit_bubble(self) -> None:
        """As wide as the longest line, up to the maximum; longer text wraps."""
        fm = self.label.fontMetrics()
        ideal = max((fm.horizontalAdvance(line) for line in self._text.split("\n")), default=0)
        margins = self.bubble.layout().contentsMargins()
        extra = margins.left() + margins.right() + 4
        self.bubble.setFixedWidth(min(self._max_bubble, ideal + extra))

    def code_blocks(self) -> list[CodeBlock]:
        return [w for w in self._blocks if isinstance(w, CodeBlock)]

    def copy_text(self) -> None:
        QGuiApplication.clipboard().setText(self._text)
