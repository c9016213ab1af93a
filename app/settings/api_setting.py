"""Settings -> Local API server: serve the loaded model to other apps (OpenAI's API).

On/off, port, API key (optional on this computer, required to listen on the network) and
whether other devices may connect. `changed(dict)` carries the whole setting as
app.store.settings_keys.API_SERVER stores it, when a box is ticked or a field is left;
`set_state(ApiState)` shows what runs (the URL, or why it does not).
"""

from __future__ import annotations

import secrets

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.engine.api_host import ApiState
from app.store.settings_keys import API_SERVER_DEFAULT, MAX_API_KEY


class ApiServerSetting(QWidget):
    changed = Signal(dict)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(6)
        self.enabled = QCheckBox("Serve the model to other apps", self)
        self.enabled.setToolTip("An OpenAI-compatible API at http://127.0.0.1:PORT/v1; it "
                                "shares the model with this chat, one reply at a time")
        lay.addWidget(self.enabled)
        form = QFormLayout()
        form.setHorizontalSpacing(12)
        self.port = QSpinBox(self)
        self.port.setRange(1024, 65535)
        self.port.setKeyboardTracking(False)
        form.addRow("Port", self.port)
        key_row = QHBoxLayout()
        self.key = QLineEdit(self)
        self.key.setMaxLength(MAX_API_KEY)
        self.key.setEchoMode(QLineEdit.EchoMode.PasswordEchoOnEdit)
        self.key.setPlaceholderText("none")
        self.key.setToolTip("Clients send it as 'Authorization: Bearer KEY'. Without one, "
                            "any program or user of this computer can use the model")
        self.new_key = QPushButton("New", self)
        self.new_key.setToolTip("Make a random key")
        key_row.addWidget(self.key, 1)
        key_row.addWidget(self.new_key)
        form.addRow("API key", key_row)
        lay.addLayout(form)
        self.lan = QCheckBox("Let other devices on the network use it", self)
        self.lan.setToolTip("Listens on every interface; needs an API key")
        lay.addWidget(self.lan)
        self.state = QLabel(self)
        self.state.setObjectName("Muted")
        self.state.setWordWrap(True)
        self.state.setStyleSheet("font-size: 11px;")
        self.state.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.state)
        for box in (self.enabled, self.lan):
            box.toggled.connect(self._emit)
        self.port.valueChanged.connect(self._emit)
        self.key.editingFinished.connect(self._key_edited)
        self.new_key.clicked.connect(self._make_key)
        self._last: dict | None = None
        self.set_value(API_SERVER_DEFAULT)
        self.set_state(ApiState(False))

    def value(self) -> dict:
        return {"enabled": self.enabled.isChecked(), "port": self.port.value(),
                "api_key": self.key.text().strip(), "lan": self.lan.isChecked()}

    def set_value(self, value: dict) -> None:
        """Show a saved setting without emitting `changed`."""
        v = {**API_SERVER_DEFAULT, **value}
        with QSignalBlocker(self.enabled), QSignalBlocker(self.port), \
                QSignalBlocker(self.key), QSignalBlocker(self.lan):
            self.enabled.setChecked(bool(v["enabled"]))
            self.port.setValue(int(v["port"]))
            self.key.setText(str(v["api_key"]))
            self.lan.setChecked(bool(v["lan"]))
        self._last = self.value()
        self._sync()

    def set_state(self, state: ApiState) -> None:
        if not state.enabled:
            self.state.setText("Off.")
        elif state.url:
            served = f" \u00b7 {state.requests} answered" if state.requests else ""
            open_to = "" if self.key.text().strip() else \
                " \u00b7 no key: any user of this computer can use it"
            self.state.setText(f"Serving at {state.url}/v1{served}{open_to}")
        elif state.error:
            self.state.setText(state.error)
        else:
            self.state.setText("Starts when a model is loaded.")

    def _sync(self) -> None:
        on = self.enabled.isChecked()
        for w in (self.port, self.key, self.new_key, self.lan):
            w.setEnabled(on)

    def _make_key(self) -> None:
        self.key.setText("sk-tpi-" + secrets.token_urlsafe(24))
        self._emit()

    def _key_edited(self) -> None:
        self._emit()

    def _emit(self, *_args) -> None:
        self._sync()
        v = self.value()
        if v != self._last:
            self._last = v
            self.changed.emit(v)
