"""Who may use the pairing port, and how often: per-address and overall counters.

An address is an IPv4 address, or the /64 prefix of an IPv6 one (a host picks freely
inside its /64, so counting single IPv6 addresses would count nothing). The guard
tracks open connections per address, new connections and pairing attempts per address
in a sliding window, and pairing attempts overall. It remembers at most
`limits.max_addresses` addresses: when that many are active, new ones are turned away
until old entries expire, so its own memory stays bounded too.

Not thread-safe: the pairing server's thread alone uses it.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from core.cluster.pairing_wire import Limits


def address_key(ip: str) -> str:
    """The unit the limits count: "192.168.1.7", "2001:db8:1:2::/64"."""
    try:
        a = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip[:64]
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    if isinstance(a, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{a}/64", strict=False))
    return str(a)


def _allow(times: deque[float], cap: int, window: float, now: float) -> bool:
    """Sliding-window rate: record `now` and return True when fewer than `cap` events
    happened within `window` seconds (the deque holds at most `cap` times)."""
    while times and now - times[0] >= window:
        times.popleft()
    if len(times) >= cap:
        return False
    times.append(now)
    return True


@dataclass
class _Address:
    open: int = 0
    conns: deque[float] = field(default_factory=deque)
    hellos: deque[float] = field(default_factory=deque)


class AddressGuard:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._addrs: dict[str, _Address] = {}
        self._hellos: deque[float] = deque()

    def admit(self, key: str) -> str | None:
        """Count a new connection from `key`; None when admitted (release() it later),
        else why not: "busy" (too many open) or "slow_down" (too many new)."""
        lim, now = self.limits, self.clock()
        a = self._addrs.get(key)
        if a is None:
            if len(self._addrs) >= lim.max_addresses:
                self._prune(now)
            if len(self._addrs) >= lim.max_addresses:
                return "busy"
            a = self._addrs[key] = _Address()
        if a.open >= lim.max_conns_per_addr:
            return "busy"
        if not _allow(a.conns, lim.conns_per_addr, lim.conn_window, now):
            return "slow_down"
        a.open += 1
        return None

    def release(self, key: str) -> None:
        a = self._addrs.get(key)
        if a is not None and a.open > 0:
            a.open -= 1

    def hello(self, key: str) -> bool:
        """Count a pairing attempt (a SPAKE2 to compute); False when over a rate."""
        lim, now = self.limits, self.clock()
        a = self._addrs.get(key)
        if a is None:
            return False  # never admitted: cannot happen, refuse anyway
        if not _allow(a.hellos, lim.hellos_per_addr, lim.hello_window, now):
            return False
        if not _allow(self._hellos, lim.hellos_total, lim.hello_window, now):
            a.hellos.pop()  # not computed: give the address its attempt back
            return False
        return True

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again (for the refusal's wording)."""
        lim, now, a = self.limits, self.clock(), self._addrs.get(key)
        full = [(self._hellos, lim.hellos_total, lim.hello_window)]
        if a is not None:
            full += [(a.conns, lim.conns_per_addr, lim.conn_window),
                     (a.hellos, lim.hellos_per_addr, lim.hello_window)]
        waits = [times[0] + window - now for times, cap, window in full
                 if times and len(times) >= cap]
        return max(1, int(max(waits, default=0) + 1))

    def _prune(self, now: float) -> None:
        lim = self.limits

        def stale(a: _Address) -> bool:
            return a.open == 0 and all(
                now - times[-1] >= window for times, window in
                ((a.conns, lim.conn_window), (a.hellos, lim.hello_window)) if times)

        for key in [k for k, a in self._addrs.items() if stale(a)]:
            del self._addrs[key]

    def tracked(self) -> int:
        return len(self._addrs)
