"""Control channel: ROUTER at rank 0, DEALER per worker, codec messages, allow-listed ops."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.comm import local_socket
from core.comm.control import BadMessage, ControlClient, ControlServer
from core.comm.curve import CurveClientConfig, CurveServerConfig, Keys
from core.errors import PeerError

ROOT = Path(__file__).resolve().parents[3]
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


# Another user, holding even the rank's CURVE keys (as if they had leaked): started as
# root, it imports first and then drops to uid 65534 (the interpreter lives under /root).
_OTHER_USER = """
import os, sys, time
import zmq
from core.comm.codec import encode
ep, pub, sec, server = sys.argv[1:5]
os.setgroups([]); os.setgid(65534); os.setuid(65534)
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.curve_publickey, s.curve_secretkey = pub.encode(), sec.encode()
s.curve_serverkey = server.encode()
s.connect(ep)
s.send_multipart(encode("hello", {"rank": 1}))
time.sleep(8)
"""


def _other_user(ep: str, keys: Keys, server: Keys) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _OTHER_USER, ep, keys.public_key,
                             keys.secret_key, server.public_key], cwd=ROOT)


def test_ipc_control_channel_takes_nothing_from_another_user():
    """A control socket in a private directory: another user cannot connect; and were the
    directory and socket open to all, the kernel's peer credentials still refuse it."""
    if os.geteuid() != 0 or not local_socket.usable():
        pytest.skip("needs root (to run a process as another uid) and ipc://")
    server, keys = Keys.generate(), Keys.generate()
    curve = CurveServerConfig(server, lambda k: k == keys.public_key)
    d = local_socket.private_dir()
    try:
        with ControlServer(ops=SERVER_OPS, curve=curve, ipc_dir=d) as srv:
            spy = _other_user(srv.endpoint, keys, server)
            try:
                assert srv.recv(timeout=3) is None  # 0700: its connect() was refused
            finally:
                spy.kill()
                spy.wait()
            os.chmod(d, 0o777)
            os.chmod(srv.endpoint[len("ipc://"):], 0o777)
            spy = _other_user(srv.endpoint, keys, server)
            try:
                with pytest.raises(BadMessage, match="another user"):
                    srv.recv(timeout=20)
            finally:
                spy.kill()
                spy.wait()
            with ControlClient(srv.endpoint, CLIENT_OPS,
                               curve=CurveClientConfig(keys, server.public_key)) as cli:
                cli.send("hello", {"rank": 1})
                _, msg = srv.recv(timeout=10)
                assert msg.op == "hello"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_private_dirs_of_killed_processes_are_removed_at_the_next_start():
    if not local_socket.usable():
        pytest.skip("no ipc:// here")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = Path(local_socket.tempfile.gettempdir()) / f"tpi-ranks-{dead}-x"
    stale.mkdir(mode=0o700)
    (stale / "control").write_text("")
    ours = local_socket.private_dir()
    try:
        assert not stale.exists()
        assert Path(ours).exists() and (Path(ours).stat().st_mode & 0o777) == 0o700
        assert local_socket.private_dir() and Path(ours).exists()  # a live process's stays
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        for d in Path(ours).parent.glob(f"tpi-ranks-{os.getpid()}-*"):
            shutil.rmtree(d)
