"""A fenced code block: language label, Copy button, monospace body that scrolls sideways."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.theme import theme


class _Body(QPlainTextEdit):
    """The code text; tells its block to refit when its width changes."""

    resized = Signal()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self.resized.emit()


class CodeBlock(QFrame):
    """Shows `code`; the Copy button puts it on the clipboard."""

    def __init__(self, code: str = "", lang: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("CodeBlock")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(1, 1, 1, 1)
        lay.setSpacing(0)

        header = QWidget(self)
        header.setObjectName("CodeHeader")
        header.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        hl = QHBoxLayout(header)
        hl.setContentsMargins(12, 2, 4, 2)
        self.lang_label = QLabel(lang or "code", header)
        self.lang_label.setObjectName("CodeLang")
        self.copy_button = QToolButton(header)
        self.copy_button.setObjectName("ActionButton")
        self.copy_button.setText("Copy")
        self.copy_button.setToolTip("Copy code")
        self.copy_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.copy_button.setIcon(theme().icon("copy", size=14))
        self.copy_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.copy_button.clicked.connect(self.copy)
        hl.addWidget(self.lang_label)
        hl.addStretch(1)
        hl.addWidget(self.copy_button)
        lay.addWidget(header)

        self.body = _Body(self)
        self.body.resized.connect(self._fit)
        self.body.setReadOnly(True)
        self.body.setFrameShape(QFrame.Shape.NoFrame)
        self.body.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.body.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.body.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                          | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSizeF(max(9.0, font.pointSizeF() * 0.95))
        self.body.setFont(font)
        self.body.setStyleSheet("QPlainTextEdit { background: transparent; padding: 6px 8px; }")
        self.body.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        lay.addWidget(self.body)
        self._code = None
        self.set_code(code, lang)

    def code(self) -> str:
        return self._code or ""

    def set_code(self, code: str, lang: str = "") -> None:
        if lang:
            self.lang_label.setText(lang)
        if code == self._code:
            return
        self._code = code
        self.body.setPlainText(code)
        self._fit()

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.code())
        self.copy_button.setText("Copied")
        self.copy_button.setIcon(theme().icon("check", color="ok", size=14))
        QTimer.singleShot(1500, self._reset_copy)

    def _reset_copy(self) -> None:
        self.copy_button.setText("Copy")
        self.copy_button.setIcon(theme().icon("copy", size=14))

    def _fit(self) -> None:
        lines = max(1, self.body.document().blockCount())
        fm = self.body.fontMetrics()
        h = lines * fm.lineSpacing() + 2 * int(self.body.document().documentMargin()) + 12
        longest = max((fm.horizontalAdvance(s) for s in self._code.split("\n")), default=0)
        if longest > self.body.viewport().width() - 16:
            h += self.body.horizontalScrollBar().sizeHint().height()
        if h != self.body.height():
            self.body.setFixedHeight(h)
