"""Text from elsewhere (a device's name, a worker's error, a model's words) shown exactly
as written: QLabel, QMessageBox and tooltips would otherwise guess rich text from a `<`
and render a peer's HTML (images, links, layouts that hide the real words)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import Qt as QtGuiNs
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget


def plain(*labels: QLabel) -> None:
    """These labels show their text as plain text, whatever it holds."""
    for label in labels:
        label.setTextFormat(Qt.TextFormat.PlainText)


def tip(text: str) -> str:
    """A tooltip that shows `text` as written (tooltips guess rich text too)."""
    return QtGuiNs.convertFromPlainText(text, Qt.WhiteSpaceMode.WhiteSpaceNormal)


def plain_box(parent: QWidget | None, icon: QMessageBox.Icon, title: str, text: str,
              buttons: QMessageBox.StandardButton = QMessageBox.StandardButton.NoButton
              ) -> QMessageBox:
    """A QMessageBox whose text is shown as written."""
    box = QMessageBox(icon, title, text, buttons, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)
    return box


def warn(parent: QWidget | None, title: str, text: str, critical: bool = False) -> None:
    icon = QMessageBox.Icon.Critical if critical else QMessageBox.Icon.Warning
    plain_box(parent, icon, title, text, QMessageBox.StandardButton.Ok).exec()


def ask(parent: QWidget | None, title: str, text: str) -> bool:
    """A Yes/No question; True for Yes."""
    box = plain_box(parent, QMessageBox.Icon.Question, title, text,
               QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
    return box.exec() == QMessageBox.StandardButton.Yes
