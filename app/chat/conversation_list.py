"""The left side bar: New chat, a search box and the list of conversations.

Titles are edited in place (double-click, F2 or the context menu); the context menu also
exports and deletes. The list only displays; the main window owns the store.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QSize, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QPushButton,
    QStyledItemDelegate,
    QVBoxLayout,
    QWidget,
)

from app.plain_text import tip
from app.store.db import Conversation
from app.theme import app_icon, theme

ID_ROLE = Qt.ItemDataRole.UserRole + 1


class _NarrowDelegate(QStyledItemDelegate):
    """Items ask for no width, so they take the view's width and long titles are elided."""

    def sizeHint(self, option, index) -> QSize:  # noqa: N802 (Qt API)
        return QSize(1, super().sizeHint(option, index).height())


class ConversationList(QWidget):
    """Emits what the user asks for; `set_conversations` refreshes it."""

    selected = Signal(int)
    new_requested = Signal()
    rename_requested = Signal(int, str)
    delete_requested = Signal(int)
    export_requested = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("Sidebar")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(12, 14, 12, 12)
        lay.setSpacing(10)

        head = QHBoxLayout()
        logo = QLabel(self)
        logo.setPixmap(app_icon().pixmap(24, 24))
        title = QLabel("TPI Chat", self)
        title.setObjectName("SidebarTitle")
        head.addWidget(logo)
        head.addWidget(title)
        head.addStretch(1)
        lay.addLayout(head)

        self.new_button = QPushButton("  New chat", self)
        self.new_button.setObjectName("Primary")
        self.new_button.setToolTip("New chat (Ctrl+N)")
        self.new_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.new_button.clicked.connect(self.new_requested)
        lay.addWidget(self.new_button)

        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search chats")
        self.search.setClearButtonEnabled(True)
        self.search_action = self.search.addAction(
            theme().icon("search", size=16), QLineEdit.ActionPosition.LeadingPosition)
        lay.addWidget(self.search)

        section = QLabel("CHATS", self)
        section.setObjectName("SectionTitle")
        lay.addWidget(section)

        self.model = QStandardItemModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.search.textChanged.connect(self.proxy.setFilterFixedString)

        self.view = QListView(self)
        self.view.setObjectName("ConversationList")
        self.view.setModel(self.proxy)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                  | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.view.setItemDelegate(_NarrowDelegate(self.view))
        self.view.selectionModel().currentChanged.connect(self._current_changed)
        self.model.itemChanged.connect(self._item_changed)
        lay.addWidget(self.view, 1)
        self.new_button.setIcon(theme().icon("new-chat", color="accent_text", size=16))
        theme().changed.connect(self._retheme)
        self._loading = False

    def _retheme(self, _mode: str) -> None:
        self.new_button.setIcon(theme().icon("new-chat", color="accent_text", size=16))
        self.search_action.setIcon(theme().icon("search", size=16))

    # content -------------------------------------------------------------------------
    def focus_search(self) -> None:
        self.search.setFocus()

    def clear_search(self) -> None:
        self.search.clear()

    def set_conversations(self, conversations: list[Conversation], current: int | None) -> None:
        """Show `conversations` (in order) and select `current`."""
        self._loading = True
        try:
            self.model.clear()
            for c in conversations:
                item = QStandardItem(c.title)
                item.setData(c.id, ID_ROLE)
                item.setToolTip(tip(c.title))
                self.model.appendRow(item)
        finally:
            self._loading = False
        if current is not None:
            self.select(current)

    def ids(self) -> list[int]:
        """Ids of the visible (filtered) conversations, in order."""
        return [int(self.proxy.index(r, 0).data(ID_ROLE)) for r in range(self.proxy.rowCount())]

    def titles(self) -> list[str]:
        return [str(self.proxy.index(r, 0).data()) for r in range(self.proxy.rowCount())]

    def select(self, conv_id: int) -> None:
        index = self._proxy_index(conv_id)
        if index.isValid():
            self._loading = True
            try:
                self.view.setCurrentIndex(index)
            finally:
                self._loading = False

    def start_rename(self, conv_id: int) -> None:
        index = self._proxy_index(conv_id)
        if index.isValid():
            self.view.edit(index)

    def _proxy_index(self, conv_id: int) -> QModelIndex:
        for r in range(self.proxy.rowCount()):
            index = self.proxy.index(r, 0)
            if index.data(ID_ROLE) == conv_id:
                return index
        return QModelIndex()

    # reactions -----------------------------------------------------------------------
    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not self._loading and current.isValid():
            self.selected.emit(int(current.data(ID_ROLE)))

    def _item_changed(self, item: QStandardItem) -> None:
        if self._loading:
            return
        title, conv_id = item.text().strip(), int(item.data(ID_ROLE))
        if title:
            # Deferred: the handler rebuilds the model, which must not happen inside the
            # item's own change notification.
            QTimer.singleShot(0, lambda: self.rename_requested.emit(conv_id, title))

    def _context_menu(self, pos) -> None:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return
        conv_id = int(index.data(ID_ROLE))
        menu = QMenu(self)
        rename = QAction(theme().icon("edit", size=16), "Rename", menu)
        rename.triggered.connect(lambda: self.view.edit(index))
        export = QAction(theme().icon("export", size=16), "Export as Markdown\u2026", menu)
        export.triggered.connect(lambda: self.export_requested.emit(conv_id))
        delete = QAction(theme().icon("trash", color="danger", size=16), "Delete", menu)
        delete.triggered.connect(lambda: self.delete_requested.emit(conv_id))
        menu.addAction(rename)
        menu.addAction(export)
        menu.addSeparator()
        menu.addAction(delete)
        menu.exec(self.view.viewport().mapToGlobal(pos))
