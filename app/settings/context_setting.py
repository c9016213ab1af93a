"""The "Context" settings: its length in tokens, and what happens when a chat outgrows it.

The length is a load setting (each rank sizes its KV cache for it, so a change reloads the
model), capped by the model's own maximum once a model is loaded (`set_model_max`). The
overflow policy (core.engine.context_policy) applies from the next reply, with no reload.
Saved as app.store.settings_keys.CONTEXT and CONTEXT_OVERFLOW.
"""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QLabel, QSpinBox, QWidget

from app.store.settings_keys import CONTEXT, MAX_CONTEXT, MIN_CONTEXT
from core.engine.context_policy import DROP_MIDDLE, DROP_OLDEST, STOP

SETTLE_MS = 800  # a length is applied once the arrows/wheel rest this long (it reloads)
OVERFLOW_CHOICES = [
    ("Drop the oldest messages", DROP_OLDEST,
     "Keep the system prompt and the latest messages; the oldest fall out of the model's "
     "view (the chat marks where)."),
    ("Drop the middle", DROP_MIDDLE,
     "Keep the system prompt, the first exchange and the latest messages; the ones in "
     "between fall out of the model's view."),
    ("Stop", STOP,
     "Never drop anything: a chat that no longer fits stops with a message (start a new "
     "chat to go on)."),
]


class ContextSetting(QWidget):
    """Two rows for a form: `length_changed(int)` (settled) and `overflow_changed(str)`."""

    length_changed = Signal(int)
    overflow_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setHorizontalSpacing(12)
        self.length = QSpinBox(self)
        self.length.setObjectName("ContextLength")
        self.length.setRange(MIN_CONTEXT, MAX_CONTEXT)
        self.length.setSingleStep(256)
        self.length.setSuffix(" tokens")
        self.length.setValue(CONTEXT.default)
        self.length.setKeyboardTracking(False)  # typing "2048" must not reload at "2"
        self.length.setToolTip("How much of the conversation the model sees at once. "
                               "The model reloads.")
        self.overflow = QComboBox(self)
        self.overflow.setObjectName("ContextOverflow")
        for text, key, tip in OVERFLOW_CHOICES:
            self.overflow.addItem(text, key)
            self.overflow.setItemData(self.overflow.count() - 1, tip,
                                      Qt.ItemDataRole.ToolTipRole)
        self.overflow.setToolTip("What happens when a conversation outgrows the context")
        self.note = QLabel("", self)
        self.note.setObjectName("Muted")
        self.note.setStyleSheet("font-size: 11px;")
        form.addRow("Context length", self.length)
        form.addRow("When it is full", self.overflow)
        form.addRow("", self.note)
        self._settle = QTimer(self, singleShot=True, interval=SETTLE_MS)
        self._settle.timeout.connect(self._emit_length)
        self.length.valueChanged.connect(self._settle.start)
        self.length.editingFinished.connect(self._apply_now)
        self.overflow.currentIndexChanged.connect(
            lambda _i: self.overflow_changed.emit(self.overflow.currentData()))

    def set_values(self, length: int, overflow: str) -> None:
        """Show saved settings without emitting."""
        with QSignalBlocker(self.length), QSignalBlocker(self.overflow):
            self.length.setValue(length)
            self.overflow.setCurrentIndex(max(0, self.overflow.findData(overflow)))

    def set_model_max(self, used: int, model_max: int) -> None:
        """The loaded model's maximum caps the length; say what is in use."""
        with QSignalBlocker(self.length):
            self.length.setMaximum(max(MIN_CONTEXT, model_max))
        capped = " (the model's maximum)" if used >= model_max else ""
        self.note.setText(f"In use: {used} tokens{capped}; this model takes up to "
                          f"{model_max}.")

    def _apply_now(self) -> None:
        if self._settle.isActive():
            self._settle.stop()
            self._emit_length()

    def _emit_length(self) -> None:
        self.length_changed.emit(self.length.value())
