"""CurveZMQ on our sockets: a server that admits only paired keys, and its client.

Lives in core.comm: the data plane and control channel use it, and the cluster layer
(pairing, the worker daemon, sessions) imports it from here.

`make_curve_server` turns a socket into a CURVE server whose ZAP handler asks `allow`
(typically `trust.contains`) about each connecting client key, at connect time: a key
unpaired later is refused on its next connect (an established connection is not cut;
the caller closes it if it must). Plaintext (NULL) clients fail the handshake before
any message is delivered, and so do clients that do not know the server's public key.

libzmq sends ZAP requests to one inproc endpoint per context, so there is one pyzmq
`ThreadAuthenticator` per context, shared by all our CURVE servers in it; each server
gets its own ZAP domain, which routes the request to that server's `allow`. The
handler is stopped when the last server of the context is released: call
`ZapGuard.close()` (after closing the socket) before terminating the context.
ZAP_ENFORCE_DOMAIN is set, so if the handler is ever gone, connections are refused
rather than let in unauthenticated.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import zmq
from zmq.auth.thread import ThreadAuthenticator


class KeyPair(Protocol):
    """What CURVE needs of an identity (core.cluster.identity.Identity has it)."""

    @property
    def public_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...


@dataclass(frozen=True)
class Keys:
    """A bare key pair, e.g. an ephemeral one for a local rank or a group's ring links."""

    public_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def generate(cls) -> Keys:
        public, secret = zmq.curve_keypair()
        return cls(public.decode("ascii"), secret.decode("ascii"))


Identity = KeyPair  # the name the helpers below were written with

log = logging.getLogger(__name__)

AllowFn = Callable[[str], bool]

_registry_lock = threading.Lock()
_authenticators: dict[int, tuple[zmq.Context, ThreadAuthenticator, set[str]]] = {}


class _Provider:
    """Adapts `allow(z85 key str)` to pyzmq's credentials-provider interface."""

    def __init__(self, allow: AllowFn) -> None:
        self.allow = allow

    def callback(self, domain: str, key: bytes) -> bool:
        # An exception here would kill the authenticator thread and hang every later
        # handshake: fail closed instead.
        try:
            ok = bool(self.allow(key.decode("ascii")))
        except Exception:
            log.exception("ZAP allow check failed; refusing the key")
            return False
        if not ok:
            log.info("refused connection from unpaired key %s", key.decode("ascii", "replace"))
        return ok


@dataclass
class ZapGuard:
    """Keeps a CURVE server's ZAP domain registered; close() releases it."""

    context: zmq.Context
    domain: str
    _closed: bool = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _registry_lock:
            entry = _authenticators.get(id(self.context))
            if entry is None:
                return
            _ctx, auth, domains = entry
            domains.discard(self.domain)
            auth.credentials_providers.pop(self.domain, None)
            if not domains:
                del _authenticators[id(self.context)]
                auth.stop()


def make_curve_server(sock: zmq.Socket, identity: Identity, allow: AllowFn) -> ZapGuard:
    """Make `sock` (not yet bound) a CURVE server admitting only keys `allow` accepts."""
    domain = f"tpi-chat-{uuid.uuid4().hex}"
    ctx = sock.context
    with _registry_lock:
        entry = _authenticators.get(id(ctx))
        if entry is None or entry[0] is not ctx:
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("zmq.auth"))
            auth.start()
            entry = (ctx, auth, set())
            _authenticators[id(ctx)] = entry
        _ctx, auth, domains = entry
        auth.configure_curve_callback(domain, credentials_provider=_Provider(allow))
        domains.add(domain)
    sock.zap_domain = domain.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    sock.curve_secretkey = identity.secret_key.encode("ascii")
    sock.curve_publickey = identity.public_key.encode("ascii")
    sock.curve_server = True
    return ZapGuard(ctx, domain)


def make_curve_client(sock: zmq.Socket, identity: Identity, server_public_key: str) -> None:
    """Make `sock` (not yet connected) a CURVE client of the server with that key."""
    sock.curve_secretkey = identity.secret_key.encode("ascii")
    sock.curve_publickey = identity.public_key.encode("ascii")
    sock.curve_serverkey = server_public_key.encode("ascii")


def peer_key(frame: zmq.Frame) -> str:
    """The z85 public key of the client that sent `frame` (received with copy=False).

    The ZAP handler sets it as the connection's User-Id, so a server can tell which
    paired peer a message came from.
    """
    return frame.get("User-Id")


@dataclass(frozen=True)
class CurveServerConfig:
    """Make a binding socket a CURVE server: our keys, and who may connect."""

    identity: KeyPair
    allow: AllowFn


@dataclass(frozen=True)
class CurveClientConfig:
    """Make a connecting socket a CURVE client of the server with that public key."""

    identity: KeyPair
    server_public_key: str
