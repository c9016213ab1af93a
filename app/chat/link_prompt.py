"""What clicking a link in a model's reply does: nothing leaves without the user seeing it.

A reply is text a model made, possibly steered by whatever it was asked to read, so its
links are not trusted: a click shows the full address (hosts in their ASCII form, so a
look-alike letter shows as xn--...) and asks before the browser opens it. Only http,
https and mailto links can be opened; any other scheme (file:, a custom app handler)
can be copied but not opened from here.
"""

from __future__ import annotations

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QMessageBox, QWidget

from app.plain_text import plain_box

OPENABLE = frozenset({"http", "https", "mailto"})
OPEN, COPY, CANCEL = "open", "copy", "cancel"


def shown(url: QUrl) -> str:
    """The address as the browser would get it, punycode hosts and escapes included."""
    return bytes(url.toEncoded().data()).decode("ascii", "replace")


def ask_user(parent: QWidget | None, url: QUrl) -> str:
    """OPEN, COPY or CANCEL, from a dialog showing the whole address."""
    openable = url.scheme().lower() in OPENABLE
    text = (f"Open this link from the reply in your browser?\n\n{shown(url)}" if openable
            else f"This link from the reply cannot be opened from TPI Chat "
                 f"({url.scheme() or 'no'} scheme):\n\n{shown(url)}")
    box = plain_box(parent, QMessageBox.Icon.Question, "Open link", text)
    buttons = {}
    if openable:
        buttons[box.addButton("Open", QMessageBox.ButtonRole.AcceptRole)] = OPEN
    buttons[box.addButton("Copy link", QMessageBox.ButtonRole.ActionRole)] = COPY
    box.setDefaultButton(box.addButton(QMessageBox.StandardButton.Cancel))
    box.exec()
    return buttons.get(box.clickedButton(), CANCEL)


def follow(parent: QWidget | None, url: QUrl) -> str:
    """Ask, then open or copy; returns what the user chose."""
    choice = ask_user(parent, url)
    if choice == OPEN and url.scheme().lower() in OPENABLE:
        QDesktopServices.openUrl(url)
    elif choice == COPY:
        QGuiApplication.clipboard().setText(shown(url))
    return choice
