"""Model -> Get models...: the catalog with fit verdicts; a download from a local fake hub
with a moving progress bar, cancel and resume, then the model opens and chats."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.library.dialog import COLUMNS, LibraryDialog
from core.library.catalog import load_catalog
from core.library.download import PARTIAL
from core.library.fit import Resources
from core.model.default_model import default_gguf_path
from tests.app.conftest import caught, close_window, open_window, send
from tests.app.fake_engine import FakeLoader
from tests.fixtures.fake_hub import FakeHub

GB = 10**9
DEFAULT_ID = "smollm2-135m-instruct-q4_1"


@pytest.fixture
def hub(monkeypatch):
    """The default model's GGUF served as the catalog's SmolLM2 entry."""
    from huggingface_hub import constants

    entry = next(e for e in load_catalog() if e.id == DEFAULT_ID)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite turns it on
    with FakeHub({entry.repo: {entry.files[0].name: default_gguf_path()}}) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        yield h


def _column(dialog: LibraryDialog, name: str) -> list[str]:
    col = COLUMNS.index(name)
    return [dialog.table.item(r, col).text() for r in range(dialog.table.rowCount())]


def test_the_catalog_is_listed_with_fit_verdicts(qtbot, tmp_path):
    res = Resources(local_budget=4 * GB, device_budgets=(8 * GB,), window="all",
                    local_bytes_per_s=1 * GB)
    d = LibraryDialog(lambda: res, lambda: tmp_path)
    qtbot.addWidget(d)
    names = _column(d, "Model")
    assert names == [e.name for e in load_catalog()]
    fits = dict(zip(names, _column(d, "Runs on"), strict=True))
    assert fits["SmolLM2 135M Instruct"] == "\u2713 Fits this computer"
    assert fits["Qwen2.5 7B Instruct"] == "\u2713 Fits with your devices"
    assert fits["Llama 3.3 70B Instruct"] == "\u2717 Too big"
    speeds = dict(zip(names, _column(d, "Speed"), strict=True))
    assert speeds["SmolLM2 135M Instruct"] == "~98 ms/token"  # 98 MB at 1 GB/s
    # with the memory window, the 70B model streams instead
    res = Resources(local_budget=4 * GB, device_budgets=(8 * GB,), window="auto")
    d.refresh()
    fits = dict(zip(names, _column(d, "Runs on"), strict=True))
    assert fits["Llama 3.3 70B Instruct"].endswith("(memory window)")


def test_download_from_the_hub_then_the_model_opens_and_chats(qtbot, hub):
    hub.state.rate = 60e6  # ~1.6 s for the 98 MB file: the bar has time to move
    w = open_window(qtbot, FakeLoader())
    d = w.open_library()
    d.select(DEFAULT_ID)
    assert d.primary.text() == "Download"
    values: list[int] = []
    d.progress.valueChanged.connect(values.append)
    with qtbot.waitSignal(d.open_requested, timeout=60000) as opened:
        qtbot.mouseClick(d.primary, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "MB/s" in d.progress_label.text(), timeout=20000)
    path = opened.args[0]
    assert path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert open(path, "rb").read() == default_gguf_path().read_bytes()
    assert len(set(values)) >= 5 and values == sorted(values)  # it moved, forwards
    qtbot.waitUntil(lambda: w.controller.ready, timeout=20000)
    assert w.model_path == path
    assert d.primary.text() == "Open"  # downloaded: the button opens it
    send(qtbot, w, "hello there")
    assert w.chat_view.messages[-1].text() == "You said: hello there"
    close_window(w)


def test_cancel_keeps_what_arrived_and_download_resumes(qtbot, hub, tmp_path):
    hub.state.rate = 20e6
    d = LibraryDialog(lambda: Resources(local_budget=4 * GB), lambda: tmp_path)
    qtbot.addWidget(d)
    d.select(DEFAULT_ID)
    qtbot.mouseClick(d.primary, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: d.progress.value() > 100, timeout=20000)
    with caught(qtbot, d.job.cancelled, timeout=10000):
        qtbot.mouseClick(d.cancel_button, Qt.MouseButton.LeftButton)
    assert "resumes" in d.progress_label.text()
    part = next((tmp_path / DEFAULT_ID / PARTIAL).glob("*.part"))
    kept = part.stat().st_size
    assert kept > 0
    hub.state.rate = None
    assert d.primary.isEnabled() and d.primary.text() == "Download"
    with qtbot.waitSignal(d.open_requested, timeout=60000):
        qtbot.mouseClick(d.primary, Qt.MouseButton.LeftButton)
    assert hub.gets()[-1][2] == f"bytes={kept}-"


def test_a_reply_measures_the_speed_the_library_shows(qtbot):
    from app.store.settings_keys import DECODE_SPEED

    w = open_window(qtbot, FakeLoader(script=lambda _t: ["word"] * 20, world_size=1))
    assert DECODE_SPEED.get(w.store) == {}
    assert _column(w.open_library(), "Speed")[0] == "\u2013"  # nothing measured yet
    send(qtbot, w, "say many words")
    speed = DECODE_SPEED.get(w.store)
    assert set(speed) == {"local"} and speed["local"] > 0  # weight bytes per second
    w.library.refresh()
    assert _column(w.library, "Speed")[0].endswith("ms/token")
    close_window(w)


def test_a_model_too_big_asks_before_downloading(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    res = Resources(local_budget=4 * GB, window="all")
    d = LibraryDialog(lambda: res, lambda: tmp_path)
    qtbot.addWidget(d)
    d.select("llama-3.3-70b-instruct-q4_k_m")
    assert "Needs 42.5 GB of disk" in d.details.text()
    asked: list[str] = []

    def no(_parent, title, text, *a, **k):
        asked.append(text)
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", no)
    qtbot.mouseClick(d.primary, Qt.MouseButton.LeftButton)
    assert asked and "too big" in asked[0] and "42.5 GB" in asked[0]
    assert not d.job.running and not (tmp_path / "llama-3.3-70b-instruct-q4_k_m").exists()


@pytest.mark.slow
def test_a_folder_model_downloads_then_chats_on_the_real_engine(qtbot, monkeypatch, tmp_path):
    """The catalog's Hugging Face folder entry, its files served by the fake hub (a tiny
    random model under the entry's file names), downloaded, opened and chatted with."""
    from huggingface_hub import constants

    from app.engine.worker import default_loader
    from tests.fixtures.tiny_models import make_tiny_model

    entry = next(e for e in load_catalog() if not e.is_gguf)
    tiny = make_tiny_model(tmp_path / "tiny", "llama")
    files = {f.name: (tiny / f.name) if (tiny / f.name).is_file() else b"{}"
             for f in entry.files}
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub({entry.repo: files}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        w = open_window(qtbot, default_loader, model=str(tiny),
                        sampling={"temperature": 0.0, "max_new_tokens": 8})
        d = w.open_library()
        d.select(entry.id)
        with qtbot.waitSignal(d.open_requested, timeout=60000) as opened:
            qtbot.mouseClick(d.primary, Qt.MouseButton.LeftButton)
    folder = opened.args[0]
    assert folder.endswith(entry.id)
    qtbot.waitUntil(lambda: w.controller.ready and w.model_path == folder, timeout=120000)
    assert w.status.model.text() == entry.id
    send(qtbot, w, "hello", timeout=60000)
    reply = w.chat_view.messages[-1]
    assert reply.role == "assistant" and reply.text()
    close_window(w)
