"""Unix-domain (ipc://) endpoints for a cluster whose ranks all run on this machine.

Loopback TCP is open to every user of the computer; a Unix socket in a directory only
this user may enter (mkdtemp makes it 0700) is not: another user's connect() fails in
the kernel. libzmq also reads the peer's credentials (SO_PEERCRED, LOCAL_PEERCRED) into
every message's "Peer-Address" ("localhost:uid:gid[:pid]"), so a receiver checks that
the sender is this user before it answers, whatever the directory's mode.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psutil
import zmq

SCHEME = "ipc://"
_PREFIX = "tpi-ranks-"


def usable() -> bool:
    """Whether this platform's libzmq has ipc:// and the OS has users."""
    return zmq.has("ipc") and hasattr(os, "geteuid")


def private_dir() -> str:
    """A new directory only this user can enter, for one cluster's sockets. Its name
    carries our pid: directories left by a process of ours that was killed before it
    could remove them are removed here."""
    _remove_stale()
    return tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")


def _remove_stale() -> None:
    for d in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        pid = d.name[len(_PREFIX):].split("-")[0]
        try:
            if (pid.isdigit() and d.stat().st_uid == os.geteuid()
                    and not psutil.pid_exists(int(pid))):
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass  # gone meanwhile, or not ours to look at


def endpoint(directory: str, name: str) -> str:
    return f"{SCHEME}{directory}/{name}"


def is_local(ep: str) -> bool:
    return ep.startswith(SCHEME)


def sibling(ep: str, name: str) -> str:
    """Another socket in the directory of ipc endpoint `ep`."""
    return endpoint(os.path.dirname(ep[len(SCHEME):]), name)


def from_this_user(frame: zmq.Frame) -> bool:
    """Whether `frame` (received with copy=False on an ipc socket) came from a process
    of this user."""
    try:
        parts = frame.get("Peer-Address").split(":")
    except (zmq.ZMQError, AttributeError):
        return False
    return len(parts) >= 2 and parts[1].isdigit() and int(parts[1]) == os.geteuid()
