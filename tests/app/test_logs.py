"""The log file: written in the (test-overridden) log folder, rotated, fed by caught failures,
warnings and unhandled exceptions; Help -> Open log folder shows the folder."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer, QUrl

from app.logs import LOG_FILE, log_dir, setup_logging, teardown_logging
from tests.app.conftest import close_window, open_window
from tests.app.fake_engine import FakeLoader


@pytest.fixture
def app_log(tmp_path):
    """The app's log file in a folder of this test's own; removed again afterwards."""
    path = setup_logging(tmp_path / "logs")
    yield path
    teardown_logging()


def read_log(path: Path) -> str:
    for h in logging.getLogger().handlers:
        h.flush()
    return path.read_text(encoding="utf-8")


def test_the_log_folder_is_the_overridden_one_in_tests():
    assert log_dir() == Path(os.environ["TPI_CHAT_LOGS"])
    try:
        assert setup_logging() == log_dir() / LOG_FILE
        assert setup_logging(log_dir() / "elsewhere") == log_dir() / LOG_FILE  # once only
    finally:
        teardown_logging()


def test_records_carry_time_level_thread_and_logger(app_log):
    logging.getLogger("app.test").warning("something odd")
    line = read_log(app_log).splitlines()[-1]
    # e.g. "2025-01-02 10:11:12,345 WARNING [MainThread] app.test: something odd"
    date, time, level, thread, rest = line.split(" ", 4)
    assert date.count("-") == 2 and time.count(":") == 2
    assert (level, thread, rest) == ("WARNING", "[MainThread]", "app.test: something odd")


def test_the_file_rotates(tmp_path):
    path = setup_logging(tmp_path, max_bytes=2000, backups=2)
    try:
        log = logging.getLogger("app.test")
        for i in range(30):  # ~3 KB: more than one file holds
            log.info("line %d %s", i, "x" * 80)
        assert path.with_name(LOG_FILE + ".1").exists()
        assert path.stat().st_size <= 2000
        for i in range(200):  # far more than three files hold: the oldest are dropped
            log.info("line %d %s", i, "x" * 80)
        assert path.with_name(LOG_FILE + ".2").exists()
        assert not path.with_name(LOG_FILE + ".3").exists()
    finally:
        teardown_logging()


def test_warnings_and_unhandled_exceptions_reach_the_file(qtbot, tmp_path, monkeypatch):
    thread_errors: list[str] = []
    monkeypatch.setattr(threading, "excepthook",  # the hook before ours: still called
                        lambda args: thread_errors.append(str(args.exc_value)))

    def slot() -> None:
        raise RuntimeError("a bug in a slot")

    def thread_body() -> None:
        raise ValueError("a bug in a thread")

    with qtbot.capture_exceptions() as slot_errors:  # pytest-qt's hook, before ours
        path = setup_logging(tmp_path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.warn("an old API", DeprecationWarning, stacklevel=1)
            t = threading.Thread(target=thread_body, name="tpi-test-thread")
            t.start()
            t.join()
            QTimer.singleShot(0, slot)
            qtbot.waitUntil(lambda: len(slot_errors) == 1)
        finally:
            teardown_logging()
    text = read_log(path)
    assert "py.warnings" in text and "DeprecationWarning: an old API" in text
    assert "Unhandled exception in thread tpi-test-thread" in text
    assert "ValueError: a bug in a thread" in text and thread_errors == ["a bug in a thread"]
    assert "CRITICAL [MainThread] app.logs: Unhandled exception" in text
    assert "RuntimeError: a bug in a slot" in text and "Traceback" in text
    assert str(slot_errors[0][1]) == "a bug in a slot"


class BrokenLoader(FakeLoader):
    """The fake backend, failing half-way through a load with a plain Exception (a bug)."""

    def __call__(self, model, opts, progress, **devices):
        progress("Importing model", 1, 2)
        raise Exception("the disk caught fire")


def test_a_failing_load_is_logged_with_its_traceback(qtbot, app_log, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("app.main_window.warn",
                        lambda _parent, _title, text, *a: shown.append(text))
    w = open_window(qtbot, BrokenLoader(), wait_ready=False)
    qtbot.waitUntil(lambda: bool(shown), timeout=10000)
    assert shown == ["Loading the model failed: the disk caught fire"]  # as before
    text = read_log(app_log)
    assert ("ERROR [tpi-engine] app.engine.worker: Loading the default model failed "
            "unexpectedly") in text
    assert "Traceback (most recent call last):" in text
    assert 'in __call__\n    raise Exception("the disk caught fire")' in text
    assert "Exception: the disk caught fire" in text
    close_window(w)


def test_help_menu_opens_the_log_folder(qtbot, monkeypatch):
    opened: list[QUrl] = []
    monkeypatch.setattr("app.main_window.QDesktopServices.openUrl",
                        lambda url: opened.append(url) or True)
    w = open_window(qtbot, FakeLoader())
    (help_menu,) = [a.menu() for a in w.menuBar().actions() if a.text() == "&Help"]
    (action,) = [a for a in help_menu.actions() if a.text() == "Open log folder"]
    action.trigger()
    assert [Path(u.toLocalFile()) for u in opened] == [Path(os.environ["TPI_CHAT_LOGS"])]
    assert log_dir().is_dir()
    close_window(w)
