"""The message composer: Enter sends, Shift+Enter adds a line, the button sends or stops."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.theme import theme

MAX_LINES = 8


class _Editor(QPlainTextEdit):
    """Plain text editor that grows with its content, up to MAX_LINES."""

    submit = Signal()
    escape = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("InputBox")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setTabChangesFocus(True)
        self.setPlaceholderText("Message TPI Chat (Enter to send, Shift+Enter for a new line)")
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self._fit()

    def keyPressEvent(self, e: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        if e.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if e.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.insertPlainText("\n")
            else:
                self.submit.emit()
            return
        if e.key() == Qt.Key.Key_Escape:
            self.escape.emit()
            return
        super().keyPressEvent(e)

    def _fit(self, *_args) -> None:
        lines = max(1, min(MAX_LINES, int(self.document().size().height())))
        h = lines * self.fontMetrics().lineSpacing() + 12
        self.setFixedHeight(h)


class InputBox(QWidget):
    """Composer with a send/stop button and an "editing" note for edit-and-resend."""

    submitted = Signal(str)
    stop_requested = Signal()
    edit_cancelled = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 4, 24, 12)
        outer.setSpacing(4)
        self.edit_note = QLabel("Editing your last message \u2014 Esc to cancel", self)
        self.edit_note.setObjectName("Muted")
        self.edit_note.hide()
        outer.addWidget(self.edit_note, 0, Qt.AlignmentFlag.AlignHCenter)
        self.frame = QFrame(self)
        self.frame.setObjectName("InputFrame")
        self.frame.setMaximumWidth(820)
        row = QHBoxLayout(self.frame)
        row.setContentsMargins(14, 8, 8, 8)
        self.editor = _Editor(self.frame)
        self.editor.submit.connect(self._submit)
        self.editor.escape.connect(self._escape)
        self.button = QToolButton(self.frame)
        self.button.setObjectName("SendButton")
        self.button.setFixedSize(32, 32)
        self.button.setIconSize(QSize(18, 18))
        self.button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.button.clicked.connect(self._button_clicked)
        row.addWidget(self.editor, 1)
        row.addWidget(self.button, 0, Qt.AlignmentFlag.AlignBottom)
        outer.addWidget(self.frame, 0, Qt.AlignmentFlag.AlignHCenter)
        self.footer = QLabel("The model can make mistakes. Replies are generated on your "
                             "devices.", self)
        self.footer.setObjectName("Muted")
        self.footer.setStyleSheet("font-size: 11px;")
        outer.addWidget(self.footer, 0, Qt.AlignmentFlag.AlignHCenter)
        self.busy = False
        self.editing = False
        self._update_button()
        theme().changed.connect(self._on_theme_changed)

    def text(self) -> str:
        return self.editor.toPlainText()

    def clear(self) -> None:
        self.editor.clear()

    def set_text(self, text: str) -> None:
        self.editor.setPlainText(text)
        self.editor.moveCursor(self.editor.textCursor().MoveOperation.End)

    def set_busy(self, busy: bool) -> None:
        """While a reply streams, the button is Stop and Enter does not send."""
        self.busy = busy
        self._update_button()

    def set_editing(self, editing: bool) -> None:
        self.editing = editing
        self.edit_note.setVisible(editing)

    def focus(self) -> None:
        self.editor.setFocus()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self.frame.setFixedWidth(min(820, self.width() - 48))

    def _on_theme_changed(self, _mode: str) -> None:
        self._update_button()

    def _update_button(self) -> None:
        if self.busy:
            self.button.setIcon(theme().icon("stop", color="accent_text"))
            self.button.setToolTip("Stop (Esc)")
        else:
            self.button.setIcon(theme().icon("send", color="accent_text"))
            self.button.setToolTip("Send (Enter)")

    def _button_clicked(self) -> None:
        if self.busy:
            self.stop_requested.emit()
        else:
            self._submit()

    def _submit(self) -> None:
        text = self.text().strip()
        if self.busy or not text:
            return
        self.editor.clear()
        self.submitted.emit(text)

    def _escape(self) -> None:
        if self.busy:
            self.stop_requested.emit()
        elif self.editing:
            self.editor.clear()
            self.set_editing(False)
            self.edit_cancelled.emit()
