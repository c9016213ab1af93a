"""The GUI-thread guard itself: it must see torch and socket waits on the armed thread only."""

from __future__ import annotations

import socket
import threading

import torch

from tests.app.thread_guard import GuiThreadGuard


def test_guard_flags_the_armed_thread_only(monkeypatch):
    guard = GuiThreadGuard().arm(monkeypatch)
    lin = torch.nn.Linear(2, 2)
    t = threading.Thread(target=lambda: lin(torch.zeros(1, 2)))
    t.start()
    t.join()
    assert guard.violations == [] and guard.calls_seen == 1
    lin(torch.zeros(1, 2))
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x"
    a.close()
    b.close()
    assert len(guard.violations) == 2
    assert "torch module" in guard.violations[0] and "recv" in guard.violations[1]
