"""Data-plane set-up: rank 0 binds, workers join with a hello, everyone wires the ring.

Sequence (all on the data-plane sockets, each message = wire header + codec message):

    worker -> 0     HELLO {rank, world_size, token, ring, pid}   (refused: REFUSE text)
    0 -> worker     WELCOME {ring: [ring endpoint of every rank], algorithm}
    r -> r+1        RING_HELLO {rank, token}    on the ring sockets
    worker -> 0     READY                       once its ring neighbours are wired
    0 -> worker     GO                          once every worker is READY

The token is a random secret from rank 0's `endpoints`, handed to workers over the
control channel; without it a stranger's hello is refused, so it can never take a
rank's place. With CURVE (`curve=`), the star is a CurveZMQ server admitting only the
allow-listed keys (paired devices and the master's ephemeral local-rank keys), each
worker rank's slot can be bound to the one key it was planned for (`rank_keys`: a
paired device holds the token like every rank, so without that it could take another
device's rank), and the ring links use a key pair generated per group and handed out
in `endpoints` (so only members can even complete a ring handshake). With `ipc_dir`
(every rank on this machine, core/comm/local_socket.py) the star and ring sockets are
Unix sockets in that private directory, and only this user's messages count. Strangers are
refused or dropped and never make set-up fail: set-up only fails when the real peers do
not show up in time, and the error then quotes the last refusal (e.g. a version
mismatch) so the user learns why.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import time
from typing import Any

import zmq

from core.comm import fastlink, local_socket, wire
from core.comm.codec import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    CodecLimits,
    decode,
    encode,
    shown,
)
from core.comm.curve import (
    CurveClientConfig,
    CurveServerConfig,
    Keys,
    make_curve_client,
    make_curve_server,
    peer_key,
)
from core.comm.endpoint import WILDCARDS, dialable, host_of, with_host
from core.comm.linkemu import LinkEmulation
from core.comm.plane import ALGORITHMS, TRANSPORTS, DataPlane
from core.comm.transport import bind_random, configure, wait_for
from core.errors import PeerError, ProtocolError

log = logging.getLogger(__name__)
_HEADER_MARGIN = 64 * 1024  # codec header and wire header on top of the tensor bytes
_ENDPOINT_RE = re.compile(r"tcp://(\[[0-9a-fA-F:.]{2,45}\]|[A-Za-z0-9.-]{1,253}):(\d{1,5})")
_IPC_RE = re.compile(r"ipc:///[A-Za-z0-9._+-][A-Za-z0-9._+/-]{0,199}")


def check_endpoint(value: object, what: str, ipc: bool = False) -> str:
    """`value` if it is tcp://host:port (a name, IPv4 or bracketed IPv6 host, port
    1-65535) as a peer may hand us one to connect to, or with `ipc` (a group of this
    machine's ranks) an ipc:// path; ProtocolError otherwise (libzmq would raise on
    connect, or dial something odd)."""
    if ipc and isinstance(value, str) and _IPC_RE.fullmatch(value):
        return value
    m = _ENDPOINT_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None or not 0 < int(m[2]) < 65536:
        raise ProtocolError(f"{what} {shown(value)} is not tcp://host:port.")
    return value


def _socket(ctx: zmq.Context, kind: int, limits: CodecLimits, op_timeout: float) -> zmq.Socket:
    s = ctx.socket(kind)
    configure(s, limits.max_total_bytes + _HEADER_MARGIN, op_timeout)
    if kind == zmq.ROUTER:
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a vanished peer is an error
    return s


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _ring_server(p: DataPlane, sock: zmq.Socket) -> None:
    if p.ring_curve is not None:
        keys = Keys(p.ring_curve["public"], p.ring_curve["secret"])
        p.guards.append(make_curve_server(sock, keys, lambda k: k == keys.public_key))


def _ring_client(p: DataPlane, sock: zmq.Socket) -> None:
    if p.ring_curve is not None:
        keys = Keys(p.ring_curve["public"], p.ring_curve["secret"])
        make_curve_client(sock, keys, keys.public_key)


def open_master(world_size: int, host: str, link: LinkEmulation | None, algorithm: str,
                op_timeout: float, limits: CodecLimits = DEFAULT_LIMITS,
                curve: CurveServerConfig | None = None, transport: str = "auto",
                rank_keys: dict[int, str] | None = None, ipc_dir: str | None = None
                ) -> tuple[DataPlane, dict[str, Any]]:
    """Rank 0: bind the star and ring sockets; returns the plane and the workers' endpoints.

    `rank_keys` (with `curve`): worker rank -> the CURVE key whose hello alone may take it.

    transport "auto" also offers raw TCP star links on loopback to workers on this
    machine (core/comm/fastlink.py); "zmq" (or TPI_DATA_PLANE=zmq) keeps all on ZeroMQ.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown allreduce algorithm {algorithm!r}")
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown data-plane transport {transport!r}")
    if rank_keys and curve is None:
        raise ValueError("rank_keys bind ranks to CURVE keys: pass curve= too")
    p = DataPlane(0, world_size, link=link, op_timeout=op_timeout, limits=limits,
                  algorithm=algorithm, rank_keys=dict(rank_keys or {}),
                  same_user=ipc_dir is not None)
    if world_size == 1:
        return p, {}
    p.ctx = zmq.Context(io_threads=1)
    p.star = _socket(p.ctx, zmq.ROUTER, limits, op_timeout)
    p.ring_in = _socket(p.ctx, zmq.ROUTER, limits, op_timeout)
    p.token = secrets.token_hex(16)
    if curve is not None:
        p.guards.append(make_curve_server(p.star, curve.identity, curve.allow))
        ring = Keys.generate()
        p.ring_curve = {"public": ring.public_key, "secret": ring.secret_key}
        _ring_server(p, p.ring_in)
    if ":" in host:
        p.star.ipv6 = p.ring_in.ipv6 = True
    h = f"[{host}]" if ":" in host else host
    endpoints = {"protocol": PROTOCOL_VERSION, "world_size": world_size, "token": p.token,
                 "star": _bind(p.star, h, ipc_dir, "star"),
                 "ring0": _bind(p.ring_in, h, ipc_dir, "ring0")}
    if p.ring_curve is not None:
        endpoints["ring_curve"] = dict(p.ring_curve)
    if fastlink.enabled(transport):
        p.fast_listener = fastlink.listen()
        endpoints["fast"] = fastlink.offer(p.fast_listener)
    p.watch.watch(p.star)  # index 0: fd -> rank learnt from hellos
    p.watch.watch(p.ring_in)  # index 1
    return p, endpoints


def _bind(sock: zmq.Socket, host: str, ipc_dir: str | None, name: str) -> str:
    if ipc_dir is None:
        return bind_random(sock, host)
    ep = local_socket.endpoint(ipc_dir, name)
    sock.bind(ep)
    return ep


def endpoints_for(endpoints: dict[str, Any], peer_host: str | None) -> dict[str, Any]:
    """`open_master`'s endpoints as a worker on `peer_host` dials them (None: this
    machine): a wildcard bind becomes the address on the route to it."""
    out = dict(endpoints)
    for key in ("star", "ring0"):
        if key in out:
            out[key] = dialable(out[key], peer_host)
    return out


def _same_token(got: str, token: str) -> bool:
    """Constant-time comparison of a peer's token with ours; as bytes, since
    hmac.compare_digest raises TypeError on a str with non-ASCII characters."""
    return hmac.compare_digest(got.encode("utf-8", "surrogatepass"), token.encode())


def _refuse(sock: zmq.Socket, ident: bytes, reason: str) -> None:
    try:
        sock.send_multipart([ident, wire.pack(wire.Kind.REFUSE), reason.encode()],
                            flags=zmq.NOBLOCK)
    except zmq.ZMQError:
        pass  # the stranger is gone or not reading: nothing more to tell it


def _check_hello(p: DataPlane, frames: list[zmq.Frame], joined: dict[int, Any],
                 key: str | None) -> dict:
    """Meta of a valid hello from CURVE key `key`; ProtocolError (sent back as the
    refusal) otherwise."""
    msg = decode(frames, ops={"hello"}, limits=p.limits)
    m = msg.meta
    rank, ws, token = m.get("rank"), m.get("world_size"), m.get("token")
    if not isinstance(token, str) or not _same_token(token, p.token):
        raise ProtocolError("This peer does not hold the session token of this group.")
    if ws != p.world_size:
        raise ProtocolError(f"This peer expects {shown(ws)} ranks, the group has "
                            f"{p.world_size}.")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 < rank < p.world_size:
        raise ProtocolError(f"Rank {shown(rank)} is not a worker rank of this group.")
    if p.rank_keys and p.rank_keys.get(rank) != key:
        raise ProtocolError(f"Rank {rank} was planned for another device; this device's key "
                            "cannot take it.")
    if rank in joined:
        raise ProtocolError(f"Rank {rank} has already joined this group.")
    check_endpoint(m.get("ring"), "This peer's hello's ring endpoint", p.same_user)
    fast = m.get("fast", False)
    if not isinstance(fast, bool) or (fast and p.fast_listener is None):
        raise ProtocolError("This peer asked for a local link this group does not offer.")
    return m


def check_welcome(m: dict[str, Any], world_size: int, ipc: bool = False
                  ) -> tuple[list[str], str, bool]:
    """(ring endpoints, algorithm, wire_ring) of rank 0's welcome; ProtocolError if bad.
    `ipc`: a group of this machine's ranks, whose ring endpoints may be ipc:// paths."""
    ring, algo = m.get("ring"), m.get("algorithm")
    if (not isinstance(ring, list) or len(ring) != world_size
            or not isinstance(algo, str) or algo not in ALGORITHMS):
        raise ProtocolError("rank 0's welcome is malformed.")
    for e in ring:
        check_endpoint(e, "A ring endpoint in rank 0's welcome", ipc)
    return list(ring), algo, m.get("wire_ring", True) is not False


def master_wait_ready(p: DataPlane, ring0: str, timeout: float) -> None:
    """Rank 0: admit the world_size-1 workers, then wire the ring; PeerError on timeout."""
    if p.world_size == 1:
        return
    deadline = time.monotonic() + timeout
    joined: dict[int, dict] = {}
    refusal = ""
    sock = p.star

    def missing() -> str:
        return _ranks([r for r in range(1, p.world_size) if r not in joined])

    def timed_out() -> PeerError:
        why = f" The last peer refused: {refusal}" if refusal else ""
        return PeerError(f"{missing()} did not join within {timeout:g} s.{why}",
                         [r for r in range(1, p.world_size) if r not in joined])

    while len(joined) < p.world_size - 1:
        frames = wait_for(lambda: sock.recv_multipart(copy=False), timeout=_left(deadline),
                          closing=p.closing, watch=p.watch, on_timeout=timed_out)
        if len(frames) < 2 or (p.same_user and not local_socket.from_this_user(frames[1])):
            p.dropped += 1  # nothing, or another user's: say nothing
            continue
        ident = frames[0].bytes
        kind = wire.peek_kind(frames[1].bytes)
        if kind is None:
            p.dropped += 1  # not our protocol at all: say nothing
            continue
        try:
            ver = frames[1].bytes[2]
            if ver != PROTOCOL_VERSION:
                raise ProtocolError(f"rank 0 speaks protocol {PROTOCOL_VERSION} and refused a "
                                    f"peer speaking protocol {ver}.")
            if kind != wire.Kind.HELLO:
                raise ProtocolError("Expected a hello from a joining peer.")
            meta = _check_hello(p, frames[2:], joined,
                                peer_key(frames[1]) if p.rank_keys else None)
        except Exception as e:  # ProtocolError, or a bug: refuse that peer, go on
            if not isinstance(e, ProtocolError):
                log.error("hello check failed on %s", type(e).__name__, exc_info=True)
            refusal = str(e) if isinstance(e, ProtocolError) else "internal error"
            _refuse(sock, ident, refusal)
            continue
        joined[meta["rank"]] = meta
        p.ident_of[meta["rank"]] = ident
        p.rank_of[ident] = meta["rank"]
        p.watch.learn(0, frames[0], meta["rank"])

    ring = [ring0] + [joined[r]["ring"] for r in range(1, p.world_size)]
    welcome = encode("welcome", {"ring": ring, "algorithm": p.algorithm,
                                 "wire_ring": p.wire_ring})
    for r in range(1, p.world_size):
        p.send(sock, [p.ident_of[r], wire.pack(wire.Kind.WELCOME), *welcome], [])
    if p.wire_ring:
        _wire_ring(p, ring, deadline)
    _accept_fast(p, {r for r, m in joined.items() if m.get("fast")}, deadline)

    ready: set[int] = set()
    while len(ready) < p.world_size - 1:
        ident = wait_for(sock.recv, timeout=_left(deadline), closing=p.closing, watch=p.watch,
                         on_timeout=lambda: PeerError(
                             f"{_ranks([r for r in joined if r not in ready])} did not finish "
                             f"joining within {timeout:g} s.",
                             [r for r in joined if r not in ready]))
        r = p.rank_of.get(ident)
        frames = sock.recv_multipart() if sock.rcvmore else []
        if r is None:
            if frames and wire.peek_kind(frames[0]) == wire.Kind.HELLO:
                _refuse(sock, ident, "This group is already complete.")
            p.dropped += 1
            continue
        try:
            ok = len(frames) == 1 and wire.unpack(frames[0])[0] == wire.Kind.READY
        except ProtocolError:
            ok = False
        if not ok:  # a member out of step: the group cannot start without it
            raise PeerError(f"rank {r} sent something other than READY while joining.", [r])
        ready.add(r)
    go = wire.pack(wire.Kind.GO)
    for r in range(1, p.world_size):
        p.send(sock, [p.ident_of[r], go], [])


def _accept_fast(p: DataPlane, ranks: set[int], deadline: float) -> None:
    """Rank 0: take the fast links of `ranks`, then close the listener for good."""
    try:
        if ranks:
            links, dropped = fastlink.accept(p.fast_listener, ranks, p.token, p.link,
                                             p.op_timeout, deadline, p.closing)
            p.dropped += dropped
            p.set_fast(links)
        else:
            p.set_fast({})
    finally:
        if p.fast_listener is not None:
            p.fast_listener.close()
            p.fast_listener = None


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, sorted(ranks)))


def _wire_ring(p: DataPlane, ring: list[str], deadline: float) -> None:
    """Connect to the next rank's ring socket and accept the previous rank's hello."""
    p.ring_out = _socket(p.ctx, zmq.DEALER, p.limits, p.op_timeout)
    _ring_client(p, p.ring_out)
    if ring[p.next].startswith("tcp://["):
        p.ring_out.ipv6 = True
    p.ring_out.connect(ring[p.next])
    p.watch.watch(p.ring_out, rank=p.next)
    hello = encode("ring_hello", {"rank": p.rank, "token": p.token})
    p.send(p.ring_out, [wire.pack(wire.Kind.RING_HELLO), *hello], [])
    ring_index = 1
    while True:
        frames = wait_for(
            lambda: p.ring_in.recv_multipart(copy=False), timeout=_left(deadline),
            closing=p.closing, watch=p.watch,
            on_timeout=lambda: PeerError(f"rank {p.prev} did not connect its ring link in "
                                         "time."))
        try:
            if len(frames) < 3:
                raise ProtocolError("short ring hello")
            if p.same_user and not local_socket.from_this_user(frames[1]):
                raise ProtocolError("ring hello from another user")
            kind, _, _ = wire.unpack(frames[1].bytes)
            if kind != wire.Kind.RING_HELLO:
                raise ProtocolError("not a ring hello")
            m = decode(frames[2:], ops={"ring_hello"}, limits=p.limits).meta
            tok = m.get("token")
            if (not isinstance(tok, str) or not _same_token(tok, p.token)
                    or m.get("rank") != p.prev):
                raise ProtocolError("ring hello from a stranger")
        except Exception as e:  # a stranger on our ring socket (or a bug): ignore it
            if not isinstance(e, ProtocolError):
                log.error("ring hello check failed on %s", type(e).__name__, exc_info=True)
            p.dropped += 1
            continue
        p.ring_prev_ident = frames[0].bytes
        p.watch.learn(ring_index, frames[0], p.prev)
        return


def open_worker(rank: int, world_size: int, endpoints: dict[str, Any], host: str,
                link: LinkEmulation | None, op_timeout: float, join_timeout: float,
                limits: CodecLimits = DEFAULT_LIMITS, curve: CurveClientConfig | None = None,
                ipc: bool = False) -> DataPlane:
    """Rank r > 0: join rank 0's group and wire the ring; returns when fully connected.
    `ipc`: rank 0 is a process of this machine and user (our control channel is an ipc
    socket), so its star may be an ipc:// path; our ring socket then is one too."""
    if not 0 < rank < world_size:
        raise ValueError(f"worker rank must be in 1..{world_size - 1}, got {rank}")
    if not isinstance(endpoints, dict):
        raise ProtocolError("The data-plane endpoints from rank 0 are malformed.")
    check_endpoint(endpoints.get("star"), "rank 0's star endpoint", ipc)
    if endpoints.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError(f"peer speaks protocol {shown(endpoints.get('protocol'))}, we speak "
                            f"{PROTOCOL_VERSION}.")
    if endpoints.get("world_size") != world_size:
        raise ProtocolError(f"rank 0 set up {shown(endpoints.get('world_size'))} ranks, this "
                            f"worker expects {world_size}.")
    p = DataPlane(rank, world_size, link=link, op_timeout=op_timeout, limits=limits,
                  token=str(endpoints.get("token", "")),
                  same_user=local_socket.is_local(endpoints["star"]))
    rc = endpoints.get("ring_curve")
    if curve is not None:
        if not (isinstance(rc, dict) and all(isinstance(rc.get(k), str) and len(rc[k]) == 40
                                             for k in ("public", "secret"))):
            raise ProtocolError("rank 0 set up a group without CURVE keys for its ring links; "
                                "the devices run different TPI Chat versions?")
        p.ring_curve = {"public": rc["public"], "secret": rc["secret"]}
    elif rc is not None:
        raise ProtocolError("rank 0 set up an encrypted group; join it with curve=...")
    p.fast_offer = endpoints.get("fast")
    p.ctx = zmq.Context(io_threads=1)
    try:
        _join(p, endpoints["star"], host, join_timeout, curve)
    except BaseException:
        p.close()
        raise
    return p


def _join(p: DataPlane, star: str, host: str, join_timeout: float,
          curve: CurveClientConfig | None = None) -> None:
    deadline = time.monotonic() + join_timeout
    p.star = _socket(p.ctx, zmq.DEALER, p.limits, p.op_timeout)
    if curve is not None:
        make_curve_client(p.star, curve.identity, curve.server_public_key)
    if star.startswith("tcp://["):
        p.star.ipv6 = True
    p.star.connect(star)
    p.watch.watch(p.star, rank=0)  # index 0
    p.ring_in = _socket(p.ctx, zmq.ROUTER, p.limits, p.op_timeout)
    _ring_server(p, p.ring_in)
    if ":" in host:
        p.ring_in.ipv6 = True
    if p.same_user:  # rank 0's private directory is ours too
        ring_ep = local_socket.sibling(star, f"ring{p.rank}")
        p.ring_in.bind(ring_ep)
    else:
        ring_ep = bind_random(p.ring_in, f"[{host}]" if ":" in host else host)
    p.watch.watch(p.ring_in)  # index 1
    fast = fastlink.usable(p.fast_offer)
    hello = encode("hello", {"rank": p.rank, "world_size": p.world_size, "token": p.token,
                             "ring": ring_ep, "pid": os.getpid(), "fast": fast})
    p.send(p.star, [wire.pack(wire.Kind.HELLO), *hello], [])
    frames = wait_for(lambda: p.star.recv_multipart(copy=False), timeout=_left(deadline),
                      closing=p.closing, watch=p.watch,
                      on_timeout=lambda: PeerError(
                          f"rank 0 did not welcome rank {p.rank} within {join_timeout:g} s."))
    if wire.peek_kind(frames[0].bytes) == wire.Kind.REFUSE:
        text = frames[1].bytes.decode("utf-8", "replace")[:500] if len(frames) > 1 else ""
        raise ProtocolError(f"rank 0 refused rank {p.rank}: {text}")
    kind, _, _ = wire.unpack(frames[0].bytes)
    if kind != wire.Kind.WELCOME:
        raise ProtocolError("rank 0 answered our hello with something other than a welcome.")
    ring, p.algorithm, p.wire_ring = check_welcome(
        decode(frames[1:], ops={"welcome"}, limits=p.limits).meta, p.world_size, p.same_user)
    if host_of(ring[0]) in WILDCARDS:  # rank 0 listens on all interfaces: its ring socket
        try:  # is where we reached its star
            ring[0] = with_host(ring[0], host_of(star))
        except ValueError as e:
            raise ProtocolError(f"rank 0's welcome is malformed: {e}") from None
    if p.wire_ring:
        _wire_ring(p, ring, deadline)
    if fast:
        p.set_fast({0: fastlink.connect(p.fast_offer["port"], p.rank, p.token, p.link,
                                        p.op_timeout, _left(deadline))})
    p.send(p.star, [wire.pack(wire.Kind.READY)], [])
    # Wait for GO: a collective sent before rank 0 saw every READY would be mistaken
    # for a broken handshake.
    n = wait_for(lambda: p.star.recv_into(p.hdr), timeout=_left(deadline), closing=p.closing,
                 watch=p.watch, on_timeout=lambda: PeerError(
                     f"rank 0 did not start the group within {join_timeout:g} s."))
    p.check_hot(p.star, n, wire.Kind.GO, 0, 0)
