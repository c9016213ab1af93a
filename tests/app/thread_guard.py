"""Test helper: catch the GUI thread running torch or waiting on a socket.

`GuiThreadGuard.arm(monkeypatch)` wraps the calls that run a model (torch.nn.Module
__call__) or block on the network (zmq Socket.recv/poll, zmq Poller.poll, and the socket
module's connect/accept/recv*) so each records a violation when made on the thread that
armed the guard (the Qt GUI thread in pytest-qt). Tests assert `violations == []`; the
engine's own record (EngineWorker.torch_thread_ids) says where forward steps did run.
"""

from __future__ import annotations

import socket
import threading
import traceback

import torch
import zmq

_WATCHED = [
    (torch.nn.Module, "__call__", "ran a torch module"),
    (zmq.Socket, "recv", "waited on a zmq socket (recv)"),
    (zmq.Socket, "recv_multipart", "waited on a zmq socket (recv_multipart)"),
    (zmq.Socket, "poll", "waited on a zmq socket (poll)"),
    (zmq.Poller, "poll", "waited on zmq sockets (Poller.poll)"),
    (socket.socket, "connect", "connected a socket"),
    (socket.socket, "accept", "accepted on a socket"),
    (socket.socket, "recv", "waited on a socket (recv)"),
    (socket.socket, "recv_into", "waited on a socket (recv_into)"),
    (socket.socket, "recvfrom", "waited on a socket (recvfrom)"),
]


class GuiThreadGuard:
    """Records what the guarded thread did that it must not (with where it did it)."""

    def __init__(self) -> None:
        self.thread_id: int | None = None
        self.violations: list[str] = []
        self.calls_seen = 0  # watched calls made on any thread (proves the guard is live)

    def arm(self, monkeypatch) -> GuiThreadGuard:
        self.thread_id = threading.get_ident()
        for owner, name, what in _WATCHED:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name), what))
        return self

    def _wrap(self, original, what: str):
        guard = self

        def watched(*args, **kwargs):
            guard.calls_seen += 1
            if threading.get_ident() == guard.thread_id:
                where = "".join(traceback.format_stack(limit=8)[:-1])
                guard.violations.append(f"the GUI thread {what}:\n{where}")
            return original(*args, **kwargs)

        return watched
