"""The "Memory window" setting: how many layer blocks each rank keeps in memory.

Auto (default) fits each device's window to its memory budget (core.engine.auto_window);
All keeps the whole share resident; N blocks streams the rest from disk. Stored as the
setting "window": "auto", "all" or a number; `window_option` turns it into RunOptions.window.
"""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QSpinBox, QWidget

from core.engine.options import Window

DEFAULT = "auto"
MAX_BLOCKS = 4096
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
        self.mode.currentIndexChanged.connect(self._edited)
        self.blocks.valueChanged.connect(self._edited)
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
        self._sync_enabled()
        self.changed.emit(self.value())
