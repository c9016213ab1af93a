"""The "Speculative decoding" setting: Auto (default), Off, or a fixed number of draft
tokens a step. Saved as app.store.settings_keys.SPECULATE ("auto", "off" or a number);
`speculate_option` turns it into RunOptions.speculate. The draft is the model itself,
quantized, on this computer (core/ranks/draft.py); changing the setting reloads."""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Signal
from PySide6.QtWidgets import QComboBox, QWidget

_CHOICES = [("Auto", "auto"), ("Off", "off"), ("2 tokens a step", 2),
            ("4 tokens a step", 4), ("8 tokens a step", 8)]


def speculate_option(stored: object) -> str:
    """The saved setting as RunOptions.speculate ("auto", "off" or "K")."""
    return str(stored)


class SpeculateSetting(QComboBox):
    """`changed(value)` with "auto", "off" or a number of draft tokens."""

    changed = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        for text, key in _CHOICES:
            self.addItem(text, key)
        self.setToolTip("A copy of the model on this computer guesses the next tokens and the "
                        "devices check several in one step: faster over slow links, the same "
                        "replies. Auto turns it on only when it pays and picks how many. The "
                        "model reloads.")
        self.currentIndexChanged.connect(lambda _i: self.changed.emit(self.value()))

    def value(self) -> str | int:
        return self.currentData()

    def set_value(self, stored: object) -> None:
        """Show a saved setting without emitting `changed` (a number not in the list is
        added as its own entry)."""
        i = self.findData(stored)
        if i < 0:
            self.addItem(f"{stored} tokens a step", stored)
            i = self.count() - 1
        with QSignalBlocker(self):
            self.setCurrentIndex(i)
