"""Light and dark themes that follow the OS, and theme-coloured SVG icons.

Colours live in resources/palettes.json and the style sheet in resources/style.qss (its
`@name` tokens are replaced by the palette's colours). `theme()` is the singleton that
widgets ask for colours and icons, and whose `changed` signal tells them to repaint.
"""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path

from PySide6.QtCore import QByteArray, QObject, QSize, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication

# resources/ sits beside app/ in the repo; a PyInstaller bundle unpacks it into sys._MEIPASS.
_ROOT = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
RESOURCES = _ROOT / "resources"
ICONS = RESOURCES / "icons"


@cache
def _palettes() -> dict[str, dict[str, str]]:
    return json.loads((RESOURCES / "palettes.json").read_text(encoding="utf-8"))


@cache
def _qss_template() -> str:
    return (RESOURCES / "style.qss").read_text(encoding="utf-8")


def os_prefers_dark() -> bool:
    """True when the OS colour scheme is dark (Qt 6.5+ style hints)."""
    hints = QGuiApplication.styleHints()
    return hints.colorScheme() == Qt.ColorScheme.Dark


def style_sheet(mode: str) -> str:
    """The style sheet with `mode`'s colours filled in."""
    colors = _palettes()[mode]
    # Longest names first so @surface_hover is not eaten by @surface.
    names = sorted(colors, key=len, reverse=True)
    pattern = re.compile("@(" + "|".join(map(re.escape, names)) + ")")
    qss = pattern.sub(lambda m: colors[m.group(1)], _qss_template())
    return qss.replace("url(ICONS/", f"url({ICONS.as_posix()}/")


def app_icon() -> QIcon:
    return QIcon(str(ICONS / "app.svg"))


class Theme(QObject):
    """The active colour mode ("dark" or "light"); emits `changed` when it switches."""

    changed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.mode = "light"
        self._icons: dict[tuple[str, str, int], QIcon] = {}

    def color(self, name: str) -> QColor:
        return QColor(_palettes()[self.mode][name])

    def hex(self, name: str) -> str:
        return _palettes()[self.mode][name]

    def icon(self, name: str, color: str = "muted", size: int = 20) -> QIcon:
        """resources/icons/<name>.svg drawn with the theme colour `color` (or a #hex)."""
        hexcolor = color if color.startswith("#") else self.hex(color)
        key = (name, hexcolor, size)
        if key not in self._icons:
            svg = (ICONS / f"{name}.svg").read_text(encoding="utf-8")
            svg = svg.replace("currentColor", hexcolor)
            renderer = QSvgRenderer(QByteArray(svg.encode()))
            icon = QIcon()
            for scale in (1, 2):
                pm = QPixmap(QSize(size * scale, size * scale))
                pm.fill(Qt.GlobalColor.transparent)
                painter = QPainter(pm)
                renderer.render(painter)
                painter.end()
                pm.setDevicePixelRatio(scale)
                icon.addPixmap(pm)
            self._icons[key] = icon
        return self._icons[key]

    def apply(self, app: QApplication, mode: str | None = None) -> None:
        """Apply `mode` (None = follow the OS) to the whole application."""
        mode = mode or ("dark" if os_prefers_dark() else "light")
        self.mode = mode
        self._icons.clear()
        app.setStyle("Fusion")
        app.setPalette(self._qpalette())
        app.setStyleSheet(style_sheet(mode))
        self.changed.emit(mode)

    def follow_os(self, app: QApplication) -> None:
        """Apply the OS scheme now and whenever it changes."""
        self.apply(app)
        QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _s: self.apply(app))

    def _qpalette(self) -> QPalette:
        c = self.color
        p = QPalette()
        roles = {
            QPalette.ColorRole.Window: "window",
            QPalette.ColorRole.WindowText: "text",
            QPalette.ColorRole.Base: "input_bg",
            QPalette.ColorRole.AlternateBase: "surface",
            QPalette.ColorRole.Text: "text",
            QPalette.ColorRole.Button: "surface",
            QPalette.ColorRole.ButtonText: "text",
            QPalette.ColorRole.Highlight: "accent",
            QPalette.ColorRole.HighlightedText: "accent_text",
            QPalette.ColorRole.ToolTipBase: "surface",
            QPalette.ColorRole.ToolTipText: "text",
            QPalette.ColorRole.PlaceholderText: "muted",
            QPalette.ColorRole.Link: "accent",
            QPalette.ColorRole.Mid: "border",
        }
        for role, name in roles.items():
            p.setColor(role, c(name))
        p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, c("muted"))
        p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, c("muted"))
        return p


_THEME: Theme | None = None


def theme() -> Theme:
    """The app-wide Theme (created on first use)."""
    global _THEME
    if _THEME is None:
        _THEME = Theme()
    return _THEME
