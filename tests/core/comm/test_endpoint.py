"""Our endpoints as another machine dials them: wildcard binds rewritten per route."""

from __future__ import annotations

import psutil
import pytest

from core.comm.endpoint import (
    dialable,
    host_of,
    parse_host_port,
    source_address_towards,
    wildcard_for,
    with_host,
)
from core.comm.handshake import endpoints_for


def test_with_host_and_host_of_round_trip_ipv4_and_ipv6():
    assert with_host("tcp://0.0.0.0:5555", "10.0.0.7") == "tcp://10.0.0.7:5555"
    assert with_host("tcp://[::]:5555", "fe80::1") == "tcp://[fe80::1]:5555"
    assert host_of("tcp://[fe80::1]:5555") == "fe80::1"
    assert host_of("tcp://10.0.0.7:5555") == "10.0.0.7"
    assert host_of("tcp://[::1:5555") == ""
    for bad in ("tcp://0.0.0.0", "0.0.0.0:5", "tcp://h:x"):
        with pytest.raises(ValueError, match="is not an endpoint"):
            with_host(bad, "10.0.0.7")


def test_a_specific_bind_is_kept_and_a_wildcard_becomes_loopback_here():
    assert dialable("tcp://127.0.0.1:5", "10.9.9.9") == "tcp://127.0.0.1:5"
    assert dialable("tcp://0.0.0.0:5", None) == "tcp://127.0.0.1:5"
    assert dialable("tcp://0.0.0.0:5", "127.0.0.1") == "tcp://127.0.0.1:5"
    assert dialable("tcp://[::]:5", "::1") == "tcp://[::1]:5"


def test_a_wildcard_becomes_our_address_on_the_route_to_the_peer():
    ours = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    routable = [a for a in ours if "." in a and not a.startswith("127.")]
    if not routable:
        pytest.skip("this machine has no non-loopback IPv4 address")
    # a peer on our own address: the route to it starts at that address (no packet sent)
    assert source_address_towards(routable[0]) == routable[0]
    assert dialable("tcp://0.0.0.0:7", routable[0]) == f"tcp://{routable[0]}:7"


def test_wildcard_family_follows_the_peers():
    assert wildcard_for(["10.0.0.2", "192.168.1.4"]) == "0.0.0.0"
    assert wildcard_for(["10.0.0.2", "fe80::2"]) == "::"


def test_data_plane_endpoints_are_rewritten_per_worker_and_the_token_kept():
    eps = {"token": "t", "star": "tcp://0.0.0.0:1", "ring0": "tcp://0.0.0.0:2",
           "world_size": 3}
    here = endpoints_for(eps, None)
    assert here == {**eps, "star": "tcp://127.0.0.1:1", "ring0": "tcp://127.0.0.1:2"}
    assert eps["star"] == "tcp://0.0.0.0:1"  # the group's own copy is untouched


def test_parse_host_port():
    assert parse_host_port(" 192.168.1.20:47000 ") == ("192.168.1.20", 47000)
    assert parse_host_port("[fe80::1]:5555") == ("fe80::1", 5555)
    assert parse_host_port("mini-pc.local:80") == ("mini-pc.local", 80)
    for bad in ("", "host", "host:", ":80", "host:0", "host:65536", "fe80::1:80", "[::1]80",
                "host:8a"):
        assert parse_host_port(bad) is None, bad
