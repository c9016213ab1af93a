"""Our endpoints as another machine must dial them.

Rank 0 binds its control and data sockets on all interfaces when a rank runs on another
device (CURVE and the allow-list guard them; see DESIGN.md). A wildcard endpoint such as
"tcp://0.0.0.0:5555" is no address to dial, so each rank is told the address of our
interface on the route to *its* machine: a laptop on Wi-Fi and Ethernet gives each device
the address on its own network, and a laptop whose address changed since the last session
gives the new one, because the route is looked up at every start.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

WILDCARDS = frozenset({"0.0.0.0", "::", "*"})


def host_of(endpoint: str) -> str:
    """"tcp://[::1]:5" -> "::1"; "tcp://10.0.0.2:5" -> "10.0.0.2"; "" when malformed."""
    try:
        return urlsplit(endpoint).hostname or ""
    except ValueError:  # e.g. an unclosed "[" from a peer
        return ""


def tcp_endpoint(host: str, port: int | str) -> str:
    """"tcp://host:port", an IPv6 host bracketed."""
    h = f"[{host}]" if ":" in host else host
    return f"tcp://{h}:{port}"


def with_host(endpoint: str, host: str) -> str:
    """The same endpoint on another host (IPv6 hosts bracketed); ValueError when
    `endpoint` is not scheme://host:port."""
    scheme, sep, rest = endpoint.partition("://")
    port = rest.rsplit(":", 1)[-1]
    if scheme != "tcp" or not sep or ":" not in rest or not port.isdigit():
        raise ValueError(f"{endpoint[:80]!r} is not an endpoint")
    return tcp_endpoint(host, port)


def wildcard_for(peer_hosts: list[str]) -> str:
    """What rank 0 binds to be reachable from every one of `peer_hosts`: all IPv4
    interfaces, or all interfaces (dual stack) when a peer has an IPv6 address."""
    return "::" if any(":" in h for h in peer_hosts) else "0.0.0.0"


def is_loopback(host: str) -> bool:
    """'localhost' or a loopback address (a host name is not resolved)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def source_address_towards(peer_host: str) -> str:
    """Our address on the route to `peer_host`, as the kernel picks it. A UDP socket's
    connect() only looks the route up: no packet is sent."""
    family = socket.AF_INET6 if ":" in peer_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((peer_host, 9))  # any port: nothing is sent
        except OSError as e:
            raise OSError(f"no route from this computer to {peer_host}: {e}") from e
        return s.getsockname()[0].split("%")[0]


def dialable(endpoint: str, peer_host: str | None) -> str:
    """`endpoint` of ours as a process on `peer_host` dials it (None: this machine).

    A socket bound to one address keeps it; a wildcard bind becomes loopback for this
    machine, else our address on the route to the peer."""
    host = host_of(endpoint)
    if host not in WILDCARDS:
        return endpoint
    if peer_host is None or is_loopback(peer_host):
        return with_host(endpoint, "::1" if host == "::" and peer_host == "::1"
                         else "127.0.0.1")
    return with_host(endpoint, source_address_towards(peer_host))


def parse_host_port(text: str) -> tuple[str, int] | None:
    """"192.168.1.20:5555" or "[fe80::1]:5555" -> (host, port); None when malformed."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            return None
    if not host or not port_text.isdigit():
        return None
    port = int(port_text)
    return (host, port) if 0 < port < 65536 else None
