"""Control channel: ROUTER at rank 0, DEALER per worker, codec messages, allow-listed ops."""

from __future__ import annotations

import pytest
import torch

from core.comm.control import BadMessage, ControlClient, ControlServer
from core.errors import PeerError

SERVER_OPS = {"hello", "ready", "error", "bye"}
CLIENT_OPS = {"setup", "bye"}


def test_hello_setup_round_trip():
    with ControlServer(ops=SERVER_OPS) as srv, ControlClient(srv.endpoint, CLIENT_OPS) as cli:
        cli.send("hello", {"rank": 1, "version": 1, "pid": 42})
        peer, msg = srv.recv(timeout=5)
        assert msg.op == "hello" and msg.meta == {"rank": 1, "version": 1, "pid": 42}
        big = torch.arange(100_000, dtype=torch.float32)  # zero-copy path
        srv.send(peer, "setup", {"layers": [0, 1]}, [big, torch.ones(2, dtype=torch.int8)])
        got = cli.recv(timeout=5)
        assert got.op == "setup" and got.meta == {"layers": [0, 1]}
        assert torch.equal(got.tensors[0], big) and got.tensors[1].dtype == torch.int8


def test_timeouts_return_none():
    with ControlServer(ops=SERVER_OPS) as srv, ControlClient(srv.endpoint, CLIENT_OPS) as cli:
        assert srv.recv(timeout=0.05) is None
        assert cli.recv(timeout=0.05) is None


def test_unknown_op_names_the_sender():
    with ControlServer(ops=SERVER_OPS) as srv, ControlClient(srv.endpoint, CLIENT_OPS) as cli:
        cli.send("rm", {})
        with pytest.raises(BadMessage, match="Unknown message kind") as e:
            srv.recv(timeout=5)
        assert e.value.identity
        cli.send("bye")  # the channel still works after a bad message
        _, msg = srv.recv(timeout=5)
        assert msg.op == "bye"
        srv.send(e.value.identity, "error", {"message": "no"})  # not in the client's list
        with pytest.raises(BadMessage):
            cli.recv(timeout=5)


def test_send_to_unknown_peer_is_a_peer_error():
    with ControlServer(ops=SERVER_OPS) as srv:
        with pytest.raises(PeerError):
            srv.send(b"nobody", "setup", {})
