"""The scrolling column of messages, with a streaming reply at the bottom.

Tokens are buffered and rendered at most every RENDER_MS, so a fast model does not
re-layout the Markdown for every token. The view sticks to the bottom while the user has
not scrolled up.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from app.chat.message_widget import MessageWidget
from app.theme import app_icon

RENDER_MS = 40
COLUMN_MAX = 820


class _EmptyState(QWidget):
    """What an empty conversation shows."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.addStretch(1)
        logo = QLabel(self)
        logo.setPixmap(app_icon().pixmap(64, 64))
        logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        title = QLabel("How can I help you today?", self)
        title.setObjectName("EmptyTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        hint = QLabel("Your messages stay on this device. Other devices only see hidden "
                      "states.", self)
        hint.setObjectName("Muted")
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        hint.setWordWrap(True)
        for w in (logo, title, hint):
            lay.addWidget(w)
        lay.addStretch(2)


class _OutOfViewMarker(QWidget):
    """A rule across the column with a note: the messages above it (all, or all after the
    first exchange) are out of the model's view."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("OutOfViewMarker")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 4, 0, 4)
        self.label = QLabel(self)
        self.label.setObjectName("Muted")
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lines = []
        for _ in range(2):
            line = QFrame(self)
            line.setFrameShape(QFrame.Shape.HLine)
            line.setObjectName("MarkerRule")
            lines.append(line)
        row.addWidget(lines[0], 1)
        row.addWidget(self.label, 0)
        row.addWidget(lines[1], 1)

    def set_count(self, count: int, after_first: bool) -> None:
        which = "after the first exchange" if after_first else "above"
        many = count != 1
        self.label.setText(f"\u2191 {count} message{'s' if many else ''} {which} "
                           f"{'are' if many else 'is'} out of the model's view")
        self.setToolTip("The conversation is longer than the model's context: it sees the "
                        "system prompt" + (", the first exchange" if after_first else "") +
                        " and the messages from here on. Settings \u2192 Context sets the "
                        "length and what is dropped.")


class ChatView(QScrollArea):
    """Shows one conversation; the main window drives it."""

    regenerate_requested = Signal()
    edit_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("ChatArea")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        inner.setObjectName("ChatColumn")
        outer = QVBoxLayout(inner)
        outer.setContentsMargins(24, 16, 24, 16)
        self.column = QWidget(inner)
        self.column.setMaximumWidth(COLUMN_MAX)
        self.layout_ = QVBoxLayout(self.column)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(10)
        self.layout_.addStretch(1)
        outer.addWidget(self.column, 1, Qt.AlignmentFlag.AlignHCenter)
        self.empty = _EmptyState(inner)
        outer.addWidget(self.empty, 100)
        self.setWidget(inner)

        self.messages: list[MessageWidget] = []
        self.streaming: MessageWidget | None = None
        self.marker: _OutOfViewMarker | None = None
        self._pending = ""
        self._stick = True
        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(RENDER_MS)
        self._render_timer.timeout.connect(self._render)
        bar = self.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range_changed)
        bar.valueChanged.connect(self._on_scrolled)
        self._update_empty()

    # content -------------------------------------------------------------------------
    def clear(self) -> None:
        self.clear_out_of_view()
        for m in self.messages:
            self.layout_.removeWidget(m)
            m.deleteLater()
        self.messages.clear()
        self.streaming = None
        self._pending = ""
        self._update_empty()

    def set_messages(self, messages: list[tuple[str, str]]) -> None:
        """Replace the view with (role, text) pairs."""
        self.clear()
        for role, text in messages:
            self.add_message(role, text)
        self._stick = True
        self.scroll_to_bottom()

    def add_message(self, role: str, text: str) -> MessageWidget:
        w = MessageWidget(role, text, self.column)
        w.set_max_bubble_width(int(self.column.width() * 0.8) or COLUMN_MAX)
        w.regenerate_requested.connect(self.regenerate_requested)
        w.edit_requested.connect(self.edit_requested)
        self.layout_.insertWidget(self.layout_.count() - 1, w)
        self.messages.append(w)
        self._update_last()
        self._update_empty()
        return w

    def remove_last(self, n: int = 1) -> None:
        for _ in range(min(n, len(self.messages))):
            w = self.messages.pop()
            if w is self.streaming:
                self.streaming = None
            self.layout_.removeWidget(w)
            w.deleteLater()
        self._update_last()
        self._update_empty()

    def set_out_of_view(self, before_user: int, count: int, after_first: bool) -> None:
        """Mark that `count` messages before the `before_user`-th user message (from 0)
        are out of the model's view (all of them, or all after the first exchange)."""
        users = [m for m in self.messages if m.role == "user"]
        if count <= 0 or before_user >= len(users):
            self.clear_out_of_view()
            return
        if self.marker is None:
            self.marker = _OutOfViewMarker(self.column)
        else:
            self.layout_.removeWidget(self.marker)
        self.marker.set_count(count, after_first)
        self.layout_.insertWidget(self.layout_.indexOf(users[before_user]), self.marker)
        self.marker.show()

    def clear_out_of_view(self) -> None:
        if self.marker is not None:
            self.layout_.removeWidget(self.marker)
            self.marker.deleteLater()
            self.marker = None

    # streaming -----------------------------------------------------------------------
    def begin_stream(self, text: str = "") -> MessageWidget:
        """Add (or reuse, if `text` is a partial reply) the streaming assistant message."""
        w = self.add_message("assistant", text)
        w.set_streaming(True)
        self.streaming = w
        self._pending = ""
        self._stick = True
        self._update_last()
        self.scroll_to_bottom()
        return w

    def show_status(self, text: str) -> None:
        """A reply on its way: its bubble (made if needed) says `text` until tokens come."""
        if self.streaming is None:
            self.begin_stream()
        self.streaming.set_status(text)

    def fail_stream(self, partial: str, error: str) -> None:
        """End the reply in progress (or a new, empty one) with `error` under `partial`."""
        if self.streaming is None:
            self.begin_stream()
        self.end_stream(partial, error=error)

    def append_token(self, piece: str) -> None:
        if self.streaming is None:
            return
        self._pending += piece
        if not self._render_timer.isActive():
            self._render_timer.start()

    def end_stream(self, text: str | None = None, stats: str = "", error: str = "") -> None:
        w = self.streaming
        if w is None:
            return
        self._render_timer.stop()
        final = text if text is not None else w.text() + self._pending
        self._pending = ""
        w.set_streaming(False)
        w.set_text(final)
        w.set_stats(stats)
        w.set_error(error)
        self.streaming = None
        self._update_last()

    def _render(self) -> None:
        if self.streaming is not None and self._pending:
            text = self.streaming.text() + self._pending
            self._pending = ""
            self.streaming.set_text(text)

    # layout helpers --------------------------------------------------------------------
    def _update_last(self) -> None:
        last_user = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=-1)
        n = len(self.messages)
        for i, m in enumerate(self.messages):
            if m.role == "user":
                m.set_last(i == last_user and self.streaming is None)
            else:
                m.set_last(i == n - 1)

    def _update_empty(self) -> None:
        empty = not self.messages
        self.empty.setVisible(empty)
        self.column.setVisible(not empty)

    def scroll_to_bottom(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _on_range_changed(self, _lo: int, hi: int) -> None:
        if self._stick:
            self.verticalScrollBar().setValue(hi)

    def _on_scrolled(self, value: int) -> None:
        self._stick = value >= self.verticalScrollBar().maximum() - 24

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        width = min(COLUMN_MAX, self.viewport().width() - 48)
        self.column.setMinimumWidth(max(200, width))
        for m in self.messages:
            m.set_max_bubble_width(int(width * 0.8))
