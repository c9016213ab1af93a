"""`tpi-chat` with no arguments: the desktop app."""

from __future__ import annotations

import sys

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.engine_host import EngineHost
from app.main_window import MainWindow
from app.store import Store
from app.theme import app_icon, theme


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
    app = create_app()
    store = Store()
    engine = EngineHost()
    window = MainWindow(store, engine)
    window.show()
    try:
        return app.exec()
    finally:
        engine.shutdown()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
