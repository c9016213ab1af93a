"""Whether an endpoint names this machine: a worker there shares our cores and memory bus."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import psutil


def on_this_machine(endpoint: str) -> bool:
    """True for "tcp://127.0.0.1:5555", "tcp://[::1]:5555" or an address of our own NICs."""
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: we connect by address, so it is not ours
    if ip.is_loopback:
        return True
    ours = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    return str(ip) in ours
