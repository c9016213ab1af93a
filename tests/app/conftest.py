"""App tests run offscreen with their data and cache in temp dirs."""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import SimpleNamespace

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _app_dirs(tmp_path, monkeypatch, built_kernels):
    """Every test gets its own database and cache folder (holding the session's compiled
    kernels, so rank processes started here do not compile them again)."""
    from tests.fixtures.kernel_cache import seed_kernels

    monkeypatch.setenv("TPI_CHAT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TPI_CHAT_CACHE", str(tmp_path / "cache"))
    seed_kernels(tmp_path / "cache", built_kernels)
    yield


@pytest.fixture
def themed(qapp):
    """The QApplication with the app's name and theme applied."""
    from app.main import create_app

    return create_app([])


def open_window(qtbot, loader, db_path=None, wait_ready=True, **settings):
    """A MainWindow on a fresh (or the given) database, driven by `loader`."""
    from app.engine.host import EngineHost
    from app.main_window import MainWindow
    from app.store.db import Store

    store = Store(db_path) if db_path else Store()
    for key, value in settings.items():
        store.set_setting(key, value)
    engine = EngineHost(loader)
    window = MainWindow(store, engine)
    window.confirm_delete = False
    qtbot.addWidget(window)
    window.show()
    if wait_ready:
        qtbot.waitUntil(lambda: window.controller.ready, timeout=60000)
    return window


class RecordingLoader:
    """The real engine's default_loader, remembering the RunOptions of every load."""

    def __init__(self):
        self.opts: list = []

    def __call__(self, model, opts, progress, **devices):
        from app.engine.worker import default_loader

        self.opts.append(opts)
        return default_loader(model, opts, progress, **devices)


def close_window(window) -> None:
    window.close()
    window.store.close()


def send(qtbot, window, text: str, timeout: int = 10000) -> None:
    """Type `text`, press Enter, wait for the reply to finish."""
    from PySide6.QtCore import Qt

    window.composer.editor.setPlainText(text)
    qtbot.keyClick(window.composer.editor, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not window.controller.busy and not window.controller.queued,
                    timeout=timeout)


@contextmanager
def caught(qtbot, signal, timeout: int = 5000, check=None):
    """Like qtbot.waitSignal, for a signal emitted on a worker thread: yields an object
    whose `args` are the first emission's (the first `check(*args)` accepts, if given),
    once the block has run and the signal came (pytest-qt's TimeoutError after `timeout`
    ms if it never does).

    qtbot.waitSignal can hang forever there: an emission landing between its timer's
    start and its event loop's quits a loop not yet running and stops the timer from
    the wrong thread (pytest-qt PR #649); it hung a CI run on the engine's `finished`."""
    got: list[tuple] = []

    def keep(*args) -> None:
        if check is None or check(*args):
            got.append(args)

    signal.connect(keep)
    catch = SimpleNamespace(args=None)
    try:
        yield catch
        qtbot.waitUntil(lambda: bool(got), timeout=timeout)
        catch.args = list(got[0])
    finally:
        signal.disconnect(keep)
