"""`tpi-chat` with no arguments: the window where a display exists, else the terminal chat
with one sentence saying why (never silently)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.launch import gui_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]


def test_no_display_is_the_reason(monkeypatch):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    if sys.platform.startswith("linux"):
        assert "no display" in gui_unavailable_reason()
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert gui_unavailable_reason() is None


def test_headless_start_says_why_before_the_terminal_chat(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(PYTHONPATH=str(ROOT), TPI_CHAT_CACHE=str(tmp_path / "cache"),
               TPI_CHAT_DATA=str(tmp_path / "data"))
    # cmd_chat is stubbed (no model loads): the point is the sentence printed before it
    p = subprocess.run([sys.executable, "-c",
                        "import sys; from app.launch import main; "
                        "sys.argv=['tpi-chat']; import core.cli_commands as c; "
                        "c.cmd_chat = lambda args: 7; sys.exit(main())"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    if sys.platform.startswith("linux"):
        assert p.returncode == 7, p.stderr
        assert "cannot open its window because there is no display" in p.stderr
