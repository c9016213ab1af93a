"""The Speculative decoding setting: saved, passed to the load's RunOptions, and the status
bar shows the acceptance rate. Real widgets, the real engine (2 ranks), a tiny model."""

from __future__ import annotations

import pytest

from app.settings.speculate_setting import SpeculateSetting, speculate_option
from tests.app.conftest import RecordingLoader, close_window, open_window, send

GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 8,
          "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.fixtures.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama")


def test_saved_values_become_run_options(qtbot):
    assert speculate_option("auto") == "auto" and speculate_option(4) == "4"
    s = SpeculateSetting()
    qtbot.addWidget(s)
    s.set_value(6)  # a number saved by hand, not in the list
    assert s.value() == 6 and s.currentText() == "6 tokens a step"


@pytest.mark.slow
def test_a_fixed_k_drafts_and_the_status_bar_shows_the_acceptance(qtbot, tiny_model, tmp_path):
    loader = RecordingLoader()
    w = open_window(qtbot, loader, db_path=tmp_path / "chat.db", model=str(tiny_model),
                    ranks=2, sampling=GREEDY, speculate=3)
    assert loader.opts[-1].speculate == "3" and w.settings.speculate.value() == 3
    send(qtbot, w, "Hello there", timeout=60000)
    assert "drafts kept" in w.status.speed.text()
    assert "Speculative decoding" in w.status.speed.toolTip()

    combo = w.settings.speculate
    combo.setCurrentIndex(combo.findData("off"))  # as a user picks it: saved, reloaded
    qtbot.waitUntil(lambda: len(loader.opts) == 2, timeout=10000)
    assert loader.opts[-1].speculate == "off" and w.store.get_setting("speculate") == "off"
    qtbot.waitUntil(lambda: w.controller.ready, timeout=60000)
    send(qtbot, w, "Hello again", timeout=60000)
    assert "tok/s" in w.status.speed.text() and "drafts kept" not in w.status.speed.text()
    close_window(w)
