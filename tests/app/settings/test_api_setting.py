"""Settings -> Local API server: the fields, what they emit, and a panel that scrolls
rather than squashes on a short window."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.engine.api_host import ApiState
from app.settings.api_setting import ApiServerSetting
from app.store.settings_keys import API_SERVER_DEFAULT, parse_api_server
from tests.app.conftest import close_window, open_window
from tests.app.fake_engine import FakeLoader


def test_fields_emit_the_whole_setting(qtbot):
    w = ApiServerSetting()
    qtbot.addWidget(w)
    assert w.value() == API_SERVER_DEFAULT and not w.port.isEnabled()
    seen: list[dict] = []
    w.changed.connect(seen.append)
    w.enabled.setChecked(True)
    assert seen[-1]["enabled"] and w.port.isEnabled() and w.key.isEnabled()
    qtbot.mouseClick(w.new_key, Qt.MouseButton.LeftButton)
    key = seen[-1]["api_key"]
    assert key.startswith("sk-tpi-") and len(key) > 30 and parse_api_server(seen[-1]) == seen[-1]
    w.set_value({"enabled": False, "port": 9000, "api_key": "", "lan": True})
    assert len(seen) == 2  # showing a saved value emits nothing
    assert w.port.value() == 9000 and w.lan.isChecked()


def test_the_state_line_says_who_can_use_it(qtbot):
    w = ApiServerSetting()
    qtbot.addWidget(w)
    w.set_state(ApiState(True, url="http://127.0.0.1:8080", requests=2))
    assert "2 answered" in w.state.text() and "any user of this computer" in w.state.text()
    w.key.setText("secret")
    w.set_state(ApiState(True, url="http://127.0.0.1:8080"))
    assert "any user" not in w.state.text()
    w.set_state(ApiState(True, error="Cannot listen on 127.0.0.1:8080 (Address in use)"))
    assert w.state.text().startswith("Cannot listen")


def test_a_short_window_scrolls_the_settings(qtbot):
    w = open_window(qtbot, FakeLoader())
    w.resize(1000, 500)
    qtbot.waitUntil(lambda: w.height() <= 520)
    panel = w.settings
    assert panel.height() >= panel.minimumSizeHint().height()  # not squashed: it scrolls
    assert w.right.currentWidget().verticalScrollBar().maximum() > 0
    close_window(w)
