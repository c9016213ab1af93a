"""Which worker endpoints are this machine (their ranks share our cores)."""

from __future__ import annotations

import psutil

from core.cluster.this_machine import on_this_machine


def test_loopback_and_our_own_addresses_are_this_machine():
    assert on_this_machine("tcp://127.0.0.1:5555")
    assert on_this_machine("tcp://127.8.9.10:1")
    assert on_this_machine("tcp://[::1]:5555")
    assert on_this_machine("tcp://localhost:5555")
    ours = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family.name == "AF_INET"]
    assert ours and all(on_this_machine(f"tcp://{a}:7000") for a in ours)


def test_other_addresses_are_not():
    # documentation ranges (RFC 5737 / 3849): never assigned to a real interface
    assert not on_this_machine("tcp://192.0.2.7:5555")
    assert not on_this_machine("tcp://[2001:db8::1]:5555")
    assert not on_this_machine("tcp://mini-pc.local:5555")
