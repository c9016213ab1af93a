"""`tpi-chat` with no arguments: the desktop app."""

from __future__ import annotations

import logging
import sys

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.engine.host import EngineHost
from app.logs import setup_logging
from app.main_window import MainWindow
from app.plain_text import warn
from app.store.db import Store, StoreError
from app.theme import app_icon, theme

log = logging.getLogger(__name__)


def create_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication with TPI Chat's name, icon and OS-following theme."""
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("TPI Chat")
    app.setApplicationDisplayName("TPI Chat")
    app.setOrganizationName("tpi-chat")
    app.setDesktopFileName("tpi-chat")
    app.setWindowIcon(app_icon())
    app.setAttribute(Qt.ApplicationAttribute.AA_DontShowIconsInMenus, False)
    theme().follow_os(app)
    return app


def main() -> int:
    """Run the app until its window closes; returns the exit code."""
    setup_logging()  # first: a failure while starting belongs in the log file too
    app = create_app()
    try:
        store = Store()
    except StoreError as e:  # e.g. chats written by a newer TPI Chat: say so, touch nothing
        log.error("cannot open the chat database: %s", e)
        warn(None, "TPI Chat", str(e), critical=True)
        return 1
    engine = EngineHost()
    window = MainWindow(store, engine)
    window.show()
    try:
        return app.exec()
    finally:
        engine.shutdown()
        store.close()
        log.info("TPI Chat closed")


if __name__ == "__main__":
    sys.exit(main())
