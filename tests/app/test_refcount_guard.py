"""Streaming replies cannot use up None's or True's references (app/refcount_guard.py).

PySide6 6.12.0 drops a reference to None at every void Qt call and to True at every
Signal.emit; on Python 3.11 the default model's long chat aborted with "none_dealloc"
after ~14 minutes. The first test streams through the real window and engine thread and
checks what is left against what a year of tokens would take; the second drains a whole
process's references through the chat view, with and without the guard.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.conftest import close_window, open_window, send
from tests.app.fake_engine import FakeLoader

ROOT = Path(__file__).resolve().parents[2]
TOKENS_PER_YEAR = 50 * 3600 * 24 * 365  # one reply after another at 50 tokens/s
SINGLETONS = {"None": None, "True": True, "False": False}


def story(_text: str) -> list[str]:
    """A reply of 12 paragraphs: the view re-spaces each of them at every render."""
    return [w for p in range(12) for w in [*(f"word{p}_{i}" for i in range(8)), "\n\n"]]


def test_a_year_of_streaming_cannot_use_up_none_or_true(qtbot, monkeypatch):
    monkeypatch.setattr("app.chat.view.RENDER_MS", 0)  # render every batch: more calls
    w = open_window(qtbot, FakeLoader(script=story, delay=0.0005, world_size=1))
    tokens: list[str] = []
    w.engine.worker.token.connect(tokens.append)
    send(qtbot, w, "Tell me a story.")  # the first reply makes what later ones reuse
    before = {name: sys.getrefcount(obj) for name, obj in SINGLETONS.items()}
    n0 = len(tokens)
    for _ in range(4):
        w.controller.regenerate()  # the same two messages: no references kept between
        qtbot.waitUntil(lambda: not w.controller.busy, timeout=20000)
    n = len(tokens) - n0
    assert n == 4 * len(story(""))
    for name, obj in SINGLETONS.items():
        left = sys.getrefcount(obj)
        per_token = max(0, before[name] - left) / n
        print(f"{name}: {per_token:.2f} references lost per token, {left} left")
        assert left > per_token * TOKENS_PER_YEAR, (
            f"{name} loses {per_token:.2f} references a token; its {left} last "
            f"{left / per_token / 50 / 3600:.1f} hours of streaming")
    close_window(w)


def drain(guard: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen",
               TPI_CHAT_REFCOUNT_GUARD="1" if guard else "0")
    return subprocess.run([sys.executable, "-m", "tests.fixtures.singleton_drain"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_process_outlives_streaming_more_references_than_it_had():
    p = drain(guard=True)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    print(out)
    if out["none_per_token"] <= 0 and out["true_per_token"] <= 0:
        pytest.skip("this PySide6 drops no references to None or True")
    # it lost more than None and True had when streaming began, and lived
    assert out["none_per_token"] * out["tokens"] > out["none_at_start"], out
    assert out["true_per_token"] * out["tokens"] > out["true_at_start"], out
    # the same stream without the guard: the crash the guard prevents
    bare = drain(guard=False)
    assert bare.returncode == -signal.SIGABRT, (bare.returncode, bare.stderr[-3000:])
    assert ("none_dealloc: deallocating None" in bare.stderr
            or "bool_dealloc: deallocating True or False" in bare.stderr), bare.stderr[-3000:]
