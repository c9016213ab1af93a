"""Who may use the pairing port, and how often: per-address and overall counters.

An address is an IPv4 address, or the /64 prefix of an IPv6 one (a host picks freely
inside its /64, so counting single IPv6 addresses would count nothing). The guard
tracks open connections per address, new connections and pairing attempts per address
in a sliding window, and pairing attempts overall.

It remembers about `limits.max_addresses` addresses, least recently seen first (an
OrderedDict: a lookup, a refresh and an eviction are O(1)). A new address is never
turned away because the table is full: the least recently seen address is forgotten
instead, unless it still holds something a stranger could gain by making us forget it:

- an open connection (its per-address connection cap), or
- a pairing attempt inside the attempt window (its attempt count: forgetting it would
  hand it fresh attempts).

Those entries are kept and skipped. There are few of them, whatever the table's size:
open connections are capped overall (`max_conns`), and every attempt an address holds
is also one of the at most `hellos_total` counted overall, so an eviction looks at no
more than `max_conns + hellos_total + 1` entries, and the table never holds more than
`max_addresses` plus that many. What churning the table can reset is the count of new
connections of an address nobody has seen in `max_addresses` connections: a stranger
with that many addresses has that many fresh counts anyway. The limits that stop code
guessing are not here at all: the wrong-code lock-out belongs to the pairing window
(pairing_window.py, one count for everyone) and the overall attempt rate is one deque.

Not thread-safe: the pairing server's thread alone uses it.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
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


@dataclass(slots=True)
class _Address:
    open: int = 0
    conns: deque[float] = field(default_factory=deque)
    hellos: deque[float] = field(default_factory=deque)


class AddressGuard:
    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._addrs: OrderedDict[str, _Address] = OrderedDict()  # least recently seen first
        self._hellos: deque[float] = deque()

    def admit(self, key: str) -> str | None:
        """Count a new connection from `key`; None when admitted (release() it later),
        else why not: "busy" (too many open) or "slow_down" (too many new)."""
        lim, now = self.limits, self.clock()
        a = self._addrs.get(key)
        if a is None:
            if len(self._addrs) >= lim.max_addresses:
                self._evict(now)
            a = self._addrs[key] = _Address()
        else:
            self._addrs.move_to_end(key)
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

    def _keep(self, a: _Address, now: float) -> bool:
        """Whether forgetting `a` would give its address something back (see above)."""
        return a.open > 0 or bool(a.hellos) and now - a.hellos[-1] < self.limits.hello_window

    def _evict(self, now: float) -> None:
        """Forget the least recently seen address that holds nothing worth keeping; the
        kept ones it passes go to the back. When every entry is to be kept (only with
        max_addresses under max_conns + hellos_total) the table grows past its size by
        those few rather than turn a new address away."""
        for _ in range(len(self._addrs)):
            key, a = self._addrs.popitem(last=False)
            if not self._keep(a, now):
                return
            self._addrs[key] = a

    def tracked(self) -> int:
        return len(self._addrs)
