"""Which user owns the other end of a loopback TCP connection.

The loopback fast path (fastlink.py) is raw TCP on 127.0.0.1, which every user of the
computer can connect to. Linux lists every TCP socket of the network namespace with its
owner's uid in /proc/net/tcp, readable by all; the peer's entry is the one whose local
address is our remote one and the other way round. Elsewhere the owner is unknown (None)
and the callers rely on the session token alone.
"""

from __future__ import annotations

import os
import socket
import struct

_TABLE = "/proc/net/tcp"
# ESTABLISHED, or SYN_RECV: a connection whose last handshake packet the listener has
# not processed yet is listed that way, with the listener's owner
_OPEN = frozenset({"01", "03"})


def our_uid() -> int | None:
    """This process's effective uid; None where the OS has none (Windows)."""
    return os.geteuid() if hasattr(os, "geteuid") else None


def _key(addr: tuple) -> str:
    """An IPv4 (host, port) as /proc/net/tcp prints it: the address as a host-order
    32-bit hex word, then the port."""
    (word,) = struct.unpack("=I", socket.inet_aton(addr[0]))
    return f"{word:08X}:{addr[1]:04X}"


def peer_uid(sock: socket.socket) -> int | None:
    """The uid that owns the other end of connected IPv4 loopback socket `sock`, if that
    end is still open; None where the OS does not tell (no /proc, the entry not found)."""
    try:
        want_local, want_remote = _key(sock.getpeername()), _key(sock.getsockname())
        with open(_TABLE) as f:
            f.readline()  # the column titles
            for line in f:
                cols = line.split()
                if (len(cols) > 7 and cols[1] == want_local and cols[2] == want_remote
                        and cols[3] in _OPEN):
                    return int(cols[7])
    except (OSError, ValueError):
        return None
    return None


def checked() -> bool:
    """Whether peer_uid can answer here."""
    return our_uid() is not None and os.path.exists(_TABLE)


def same_user(sock: socket.socket) -> bool:
    """False when the other end of `sock` provably belongs to another user, or when it
    cannot be found although this OS can tell (closed already, or not loopback)."""
    if not checked():
        return True
    return peer_uid(sock) == our_uid()
