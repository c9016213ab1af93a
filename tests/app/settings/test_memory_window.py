"""The Memory window setting: saved, passed to the load's RunOptions, shown on the cards.

Real widgets, the real engine (LocalCluster, 2 ranks) and a tiny random model."""

from __future__ import annotations

import re

import pytest

from app.settings.window_setting import MemoryWindowSetting, window_option
from tests.app.conftest import RecordingLoader, close_window, open_window, send

pytestmark = pytest.mark.slow

LAYERS = 4  # -> 8 layer blocks per rank
GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 6,
          "repetition_penalty": 1.0}
MEMORY_RE = re.compile(r"Memory window (\d+)/(\d+) blocks(?: \(keeps (\d+)\))?")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.fixtures.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama",
                           num_hidden_layers=LAYERS)


def _memory(card) -> tuple[int, int, int | None] | None:
    m = MEMORY_RE.search(card.memory_label.text())
    return (int(m[1]), int(m[2]), int(m[3]) if m[3] else None) if m else None


def test_window_option_reads_saved_values():
    assert window_option("all") is None and window_option(3) == 3
    assert window_option(None) == "auto" and window_option("junk") == "auto"
    assert window_option(0) == "auto" and window_option(True) == "auto"


def test_choosing_n_blocks_reloads_with_that_window_and_the_cards_show_it(qtbot, tiny_model,
                                                                        tmp_path):
    loader = RecordingLoader()
    db = tmp_path / "chat.db"
    w = open_window(qtbot, loader, db_path=db, model=str(tiny_model), ranks=2,
                    sampling=GREEDY)
    assert loader.opts[-1].window == "auto"  # the default; no budgets locally -> all
    setting: MemoryWindowSetting = w.settings.memory_window
    assert setting.value() == "auto" and not setting.blocks.isEnabled()
    qtbot.waitUntil(lambda: len(w.devices.cards) == 2 and all(
        _memory(c) == (2 * LAYERS, 2 * LAYERS, None) for c in w.devices.cards.values()),
        timeout=10000)

    setting.blocks.setValue(3)  # disabled while Auto: no reload yet
    assert len(loader.opts) == 1
    setting.mode.setCurrentIndex(setting.mode.findData("blocks"))  # as a user picks it
    qtbot.waitUntil(lambda: len(loader.opts) == 2, timeout=10000)
    assert loader.opts[-1].window == 3 and w.store.get_setting("window") == 3
    qtbot.waitUntil(lambda: w.controller.ready, timeout=60000)
    send(qtbot, w, "Hello there", timeout=60000)

    def windowed() -> bool:
        got = [_memory(c) for c in w.devices.cards.values()]
        return len(got) == 2 and all(m and m[1] == 2 * LAYERS and m[2] == 3 and
                                     0 < m[0] <= 3 for m in got)

    qtbot.waitUntil(windowed, timeout=10000)
    assert all(c.memory.fraction <= 3 / (2 * LAYERS) for c in w.devices.cards.values())
    close_window(w)

    again = open_window(qtbot, RecordingLoader(), db_path=db, wait_ready=False)
    try:  # the choice was saved: a new window starts with it
        assert again.settings.memory_window.value() == 3
        assert again.run_options().window == 3
    finally:
        close_window(again)


def test_arrow_clicks_reload_once_when_they_settle(qtbot):
    from PySide6.QtCore import Qt

    setting = MemoryWindowSetting()
    qtbot.addWidget(setting)
    setting.set_value(2)
    got: list = []
    setting.changed.connect(got.append)
    for _ in range(3):  # 2 -> 5, as fast as a user clicks
        qtbot.keyClick(setting.blocks, Qt.Key.Key_Up)
    assert got == []  # nothing reloads mid-way
    qtbot.waitUntil(lambda: got == [5], timeout=5000)
    qtbot.wait(100)
    assert got == [5]

    qtbot.keyClick(setting.blocks, Qt.Key.Key_Down)  # 4, then Enter applies it at once
    qtbot.keyClick(setting.blocks, Qt.Key.Key_Enter)
    assert got == [5, 4]
    setting.mode.setCurrentIndex(setting.mode.findData("all"))  # a mode change: at once
    assert got == [5, 4, "all"]
