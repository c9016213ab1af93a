"""A restarted worker comes back on the ports it had, or on new ones when those are taken."""

from __future__ import annotations

import socket

from core.cluster.worker_ports import bind_preferring, save_ports, saved_ports


def _bind(port: int) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    return s


def test_saved_ports_round_trip_and_bad_files_are_ignored(tmp_path):
    assert saved_ports(tmp_path) == {}
    save_ports(tmp_path, 4000, 5000)
    assert saved_ports(tmp_path) == {"control": 4000, "pairing": 5000}
    (tmp_path / "ports.json").write_text('{"control": 70000, "pairing": true, "x": 1}')
    assert saved_ports(tmp_path) == {}
    (tmp_path / "ports.json").write_text("[")
    assert saved_ports(tmp_path) == {}


def test_the_preferred_port_is_taken_when_free_else_any():
    first = _bind(0)
    port = first.getsockname()[1]
    first.close()
    again = bind_preferring(_bind, port)
    assert again.getsockname()[1] == port
    other = bind_preferring(_bind, port)  # taken now: a new port, no error
    assert other.getsockname()[1] not in (0, port)
    again.close()
    other.close()
