"""The "Memory window" setting: how many layer blocks each rank keeps in memory.

Auto (default) fits each device's window to its memory budget (core.engine.auto_window);
All keeps the whole share resident; N blocks streams the rest from disk. Saved as
app.store.settings_keys.WINDOW ("auto", "all" or a number); `window_option` turns it into
RunOptions.window.
"""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QSpinBox, QWidget

from app.store.settings_keys import WINDOW
from core.engine.options import Window

DEFAULT = WINDOW.default
MAX_BLOCKS = 4096
SETTLE_MS = 800  # a block count is applied once the arrows/wheel rest this long
_CHOICES = [("Auto", "auto"), ("All in memory", "all"), ("N blocks", "blocks")]


def window_option(stored: object) -> Window:
    """The saved setting as RunOptions.window; anything unreadable counts as Auto."""
    if stored == "all":
        return None
    if isinstance(stored, int) and not isinstance(stored, bool) and stored >= 1:
        return stored
    return "auto"


class MemoryWindowSetting(QWidget):
    """A mode combo plus a block count; `changed(value)` with "auto", "all" or an int."""

    changed = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.mode = QComboBox(self)
        for text, key in _CHOICES:
            self.mode.addItem(text, key)
        self.mode.setToolTip("Layer blocks each device keeps in memory; the rest stream from "
                             "disk as they are needed. Auto fits each device's memory budget. "
                             "The model reloads.")
        self.blocks = QSpinBox(self)
        self.blocks.setRange(1, MAX_BLOCKS)
        self.blocks.setValue(2)
        self.blocks.setKeyboardTracking(False)  # typing "12" must not reload at "1"
        self.blocks.setToolTip("Blocks per device (2 = one in use, the next one loading)")
        lay.addWidget(self.mode, 1)
        lay.addWidget(self.blocks)
        # Each change reloads the model: clicking 2 -> 5 must reload once, at 5, not at 3, 4, 5.
        self._settle = QTimer(self, singleShot=True, interval=SETTLE_MS)
        self._settle.timeout.connect(self._emit)
        self.mode.currentIndexChanged.connect(self._edited)
        self.blocks.valueChanged.connect(self._settle.start)
        self.blocks.editingFinished.connect(self._apply_now)  # Enter / focus out
        self._sync_enabled()

    def value(self) -> str | int:
        key = self.mode.currentData()
        return self.blocks.value() if key == "blocks" else key

    def set_value(self, stored: object) -> None:
        """Show a saved setting without emitting `changed`."""
        w = window_option(stored)
        with QSignalBlocker(self.mode), QSignalBlocker(self.blocks):
            key = "auto" if w == "auto" else "all" if w is None else "blocks"
            self.mode.setCurrentIndex(self.mode.findData(key))
            if isinstance(w, int):
                self.blocks.setValue(min(w, MAX_BLOCKS))
        self._sync_enabled()

    def _sync_enabled(self) -> None:
        self.blocks.setEnabled(self.mode.currentData() == "blocks")

    def _edited(self, *_args) -> None:
        """A mode change applies at once (and takes any pending count with it)."""
        self._sync_enabled()
        self._settle.stop()
        self._emit()

    def _apply_now(self) -> None:
        """Enter or leaving the box applies a pending count without waiting."""
        if self._settle.isActive():
            self._settle.stop()
            self._emit()

    def _emit(self) -> None:
        self.changed.emit(self.value())
