"""The pairing port's per-address counters (pairing_guard.AddressGuard), on a fake clock:
the rates per address and overall, a full table that forgets its least recently seen
address rather than turn a new one away, the entries it must not forget (open
connections, pairing attempts), and the cost of a new address at a full table. A real
worker under a crowd of 5,000 addresses: test_pairing_crowd.py."""

from __future__ import annotations

import sys

from core.cluster.pairing_guard import AddressGuard
from core.cluster.pairing_wire import DEFAULT_LIMITS, Limits


def _clock() -> tuple[list[float], AddressGuard, Limits]:
    now = [0.0]
    lim = Limits(max_conns_per_addr=2, conns_per_addr=3, hellos_per_addr=2, hellos_total=3,
                 conn_window=10, hello_window=10, max_addresses=2)
    return now, AddressGuard(lim, clock=lambda: now[0]), lim


def test_the_guard_counts_per_address_and_overall() -> None:
    now, g, _ = _clock()
    assert g.admit("a") is None and g.admit("a") is None
    assert g.admit("a") == "busy"  # two open
    g.release("a")
    assert g.admit("a") is None
    g.release("a")
    assert g.admit("a") == "slow_down"  # three new ones within the window
    assert 1 <= g.retry_after("a") <= 11
    assert g.hello("a") and g.hello("a") and not g.hello("a")
    assert g.admit("b") is None and g.hello("b") and not g.hello("b")  # 3 overall
    # a and b both hold an open connection and attempts: a new address is let in all the
    # same (it used to be turned away `busy`), and the table grows by it
    assert g.admit("c") is None and g.tracked() == 3
    for key in ("a", "b", "c"):
        g.release(key)
    g.release("a")
    now[0] = 11.0
    assert g.admit("d") is None and g.tracked() <= 3  # ... and shrinks back
    assert g.admit("a") is None and g.hello("a")  # its windows passed


def test_a_full_table_forgets_the_least_recently_seen_address() -> None:
    now = [0.0]
    g = AddressGuard(Limits(conns_per_addr=1, conn_window=100, max_addresses=3),
                     clock=lambda: now[0])
    for key in "abc":
        assert g.admit(key) is None
        g.release(key)
    assert g.admit("a") == "slow_down"  # seen again: now the most recent
    assert g.admit("d") is None  # table full: b goes, the least recently seen
    g.release("d")
    assert g.tracked() == 3
    assert g.admit("b") is None  # forgotten, so counted afresh (c goes now)
    assert g.admit("a") == "slow_down"  # still remembered: its count stands
    assert g.tracked() == 3


def test_churning_the_table_gives_a_stranger_nothing_back() -> None:
    """A stranger's attempts and open connections outlive 5,000 other addresses passing
    through a table of 4,096: no fresh attempts, no extra connections from churning."""
    now = [0.0]
    lim = DEFAULT_LIMITS
    g = AddressGuard(lim, clock=lambda: now[0])
    assert g.admit("10.0.0.1") is None
    assert all(g.hello("10.0.0.1") for _ in range(lim.hellos_per_addr))
    g.release("10.0.0.1")
    for _ in range(lim.max_conns_per_addr):
        assert g.admit("10.0.0.2") is None  # and keeps them open
    for i in range(5000):
        now[0] += 0.001
        key = f"10.1.{i // 250}.{i % 250}"
        assert g.admit(key) is None  # never turned away for a full table
        g.release(key)
    assert g.tracked() <= lim.max_addresses
    assert g.admit("10.0.0.1") is None and not g.hello("10.0.0.1")  # still out of attempts
    assert g.admit("10.0.0.2") == "busy"  # still 4 open
    assert g.retry_after("10.0.0.1") > 500  # its attempts' window, not a fresh one


def _calls(g: AddressGuard, key: str) -> int:
    """Python and C function calls made by one admit(): a count of its work that does
    not depend on the machine's load."""
    calls = 0

    def count(frame, event, arg) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        g.admit(key)
    finally:
        sys.setprofile(None)
    return calls


def test_a_new_address_costs_the_same_at_a_full_table() -> None:
    """It used to cost a scan of the whole table (every entry a Python call) once the
    table was full: ~4,096 calls per new address instead of ~10."""
    now = [0.0]
    lim = DEFAULT_LIMITS
    g = AddressGuard(lim, clock=lambda: now[0])
    for i in range(100):
        g.admit(f"10.1.0.{i}")
        g.release(f"10.1.0.{i}")
    few = _calls(g, "10.2.0.1")
    for i in range(lim.max_addresses):
        g.admit(f"10.3.{i // 250}.{i % 250}")
        g.release(f"10.3.{i // 250}.{i % 250}")
    assert g.tracked() == lim.max_addresses
    full = _calls(g, "10.2.0.2")
    # the eviction: a pop, a look at what it held, nothing else
    assert full <= few + 8, (few, full)
