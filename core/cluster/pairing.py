"""Pairing: a worker and a master exchange CURVE public keys, authenticated by a short code.

The worker runs a `PairingServer` (plaintext ZeroMQ ROUTER: nothing secret crosses it)
and shows a 6-digit code; the master calls `pair_with` with the code the user typed.
Messages are codec messages (msgpack header, no tensors):

    master -> worker   hello    {name, pake: SPAKE2 message A}
    worker -> master   challenge {name, pake: SPAKE2 message B, public_key}
    master -> worker   confirm  {public_key, mac: master's key confirmation}
    worker -> master   paired   {mac: worker's key confirmation}     (trusts the master)
                   or  refused  {reason, name, tries_left, version, detail}

See pairing_code.py for why the master confirms first. The worker allows one attempt
in flight, answers a wrong code only after a short delay, and after `max_tries` wrong
codes retires the code and shows a new one. A used code is retired too. The same port
answers `info` requests (the manual host:port fallback when mDNS is unavailable).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from core.cluster import pairing_code
from core.cluster.identity import MAX_NAME_CHARS, Identity, fingerprint, is_public_key
from core.cluster.peer_info import PeerInfo, local_peer_info
from core.cluster.trust import TrustedPeer, TrustStore
from core.comm.codec import PROTOCOL_VERSION, CodecLimits, Message, decode, encode
from core.errors import PeerError, ProtocolError, TpiError

log = logging.getLogger(__name__)

OPS_TO_WORKER = frozenset({"info", "hello", "confirm"})
OPS_TO_MASTER = frozenset({"info", "challenge", "paired", "refused"})
LIMITS = CodecLimits(max_header_bytes=4096, max_total_bytes=0, max_tensors=0)
_MAX_FRAME = 8192  # transport cap: libzmq drops a connection sending anything bigger
_PAKE_BYTES = 33  # side byte + Ed25519 element
_POLL_MS = 100


class PairingError(PeerError):
    """Pairing failed; the message says why and what to do."""


@dataclass(frozen=True)
class PairedPeer:
    """The worker a master just paired with."""

    name: str
    public_key: str
    endpoint: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


# ---------------------------------------------------------------- message helpers


def _valid_name(x: object) -> bool:
    return isinstance(x, str) and 0 < len(x) <= MAX_NAME_CHARS and x.isprintable()


def _valid_pake(x: object) -> bool:
    return isinstance(x, bytes) and len(x) == _PAKE_BYTES


def _claimed_version(frames: Sequence[bytes]) -> int | None:
    """The protocol version a message claims, to name it when the codec refused it."""
    if not frames or len(frames[0]) > LIMITS.max_header_bytes:
        return None
    try:
        header = msgpack.unpackb(frames[0], raw=False, ext_hook=_no_ext,
                                 max_bin_len=LIMITS.max_header_bytes,
                                 max_str_len=LIMITS.max_header_bytes)
    except Exception:  # garbage: no version to report
        return None
    v = header.get("v") if isinstance(header, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError("extension types are not allowed")


def _tries(n: int) -> str:
    return f"{n} {'try' if n == 1 else 'tries'} left"


def _version_text(theirs: int) -> str:
    return (f"speaks protocol {theirs}, this device speaks {PROTOCOL_VERSION}; install the "
            "same TPI Chat version on both devices")


# ---------------------------------------------------------------- worker side


@dataclass
class _Session:
    """One pairing attempt between hello and confirm."""

    rid: bytes
    master_name: str
    master_msg: bytes
    worker_msg: bytes
    shared_key: bytes
    expires: float


class PairingServer:
    """The worker's pairing endpoint, served from a background thread.

    `on_paired(peer)` runs after a master was added to `trust`; `on_new_code(code)` runs
    whenever the code changes (used or too many wrong tries) so the console can show it.
    Both run on the server thread: keep them short.
    """

    def __init__(self, identity: Identity, trust: TrustStore, host: str = "127.0.0.1",
                 port: int = 0, *, on_paired: Callable[[TrustedPeer], None] | None = None,
                 on_new_code: Callable[[str], None] | None = None,
                 describe: Callable[[], PeerInfo] | None = None, max_tries: int = 3,
                 failure_delay: float = 1.0, session_timeout: float = 15.0) -> None:
        if trust.role != "master":
            raise ValueError("a worker's pairing server stores masters")
        self.identity = identity
        self.trust = trust
        self.on_paired = on_paired
        self.on_new_code = on_new_code
        self.max_tries = max_tries
        self.failure_delay = failure_delay
        self.session_timeout = session_timeout
        self._describe = describe
        self._lock = threading.Lock()
        self._code = pairing_code.new_code()
        self._failures = 0
        self._session: _Session | None = None
        self._busy_until = 0.0  # after a wrong code: no new attempt before this
        self._delayed: list[tuple[float, bytes, list[bytes]]] = []  # (due, rid, frames)
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.setsockopt(zmq.MAXMSGSIZE, _MAX_FRAME)
        h = f"[{host}]" if ":" in host else host
        if ":" in host:
            self._sock.ipv6 = True
        try:
            self._sock.bind(f"tcp://{h}:{port}")
        except zmq.ZMQError as e:
            self._sock.close(linger=0)
            self._ctx.term()
            why = os.strerror(e.errno)
            raise PairingError(f"cannot listen for pairing on {host}:{port} ({why}); choose "
                               "another address or port.") from e
        self.host = host
        self.port = int(self._sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
        self._thread = threading.Thread(target=self._run, name="pairing-server", daemon=True)
        self._thread.start()

    @property
    def code(self) -> str:
        """The code to show the user, "482-913"."""
        with self._lock:
            return self._code

    @property
    def endpoint(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{h}:{self.port}"

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> PairingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the server thread --

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._sock.poll(_POLL_MS):
                    frames = self._sock.recv_multipart()
                    if len(frames) >= 2:
                        self._handle(frames[0], frames[1:])
                self._send_due()
            except zmq.ZMQError as e:
                if self._stop.is_set():
                    return
                log.warning("pairing server: %s", e)
            except Exception:  # a bug must not take the pairing port down with it
                log.exception("pairing server: unexpected error")

    def _send(self, rid: bytes, op: str, meta: dict[str, Any]) -> None:
        try:
            self._sock.send_multipart([rid, *encode(op, meta)], flags=zmq.NOBLOCK)
        except zmq.ZMQError as e:  # the master went away: nothing to tell it
            log.debug("pairing server: reply dropped (%s)", e)

    def _send_due(self) -> None:
        now = time.monotonic()
        due = [d for d in self._delayed if d[0] <= now]
        self._delayed = [d for d in self._delayed if d[0] > now]
        for _, rid, frames in due:
            try:
                self._sock.send_multipart([rid, *frames], flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _refuse(self, rid: bytes, reason: str, detail: str = "", **extra: Any) -> None:
        self._send(rid, "refused", {"reason": reason, "name": self.identity.name,
                                    "version": PROTOCOL_VERSION, "detail": detail, **extra})

    def _handle(self, rid: bytes, frames: list[bytes]) -> None:
        try:
            msg = decode(frames, OPS_TO_WORKER, LIMITS)
        except ProtocolError as e:
            v = _claimed_version(frames)
            if v is not None and v != PROTOCOL_VERSION:
                self._refuse(rid, "version", f"this worker speaks protocol {PROTOCOL_VERSION}",
                             peer_version=v)
            else:
                self._refuse(rid, "bad_request", str(e))
            return
        if msg.op == "info":
            try:
                self._send(rid, "info", {"txt": self._info().to_txt()})
            except TpiError as e:  # e.g. a damaged trust store: say so instead of hanging up
                self._refuse(rid, "error", str(e))
        elif msg.op == "hello":
            self._hello(rid, msg)
        else:
            self._confirm(rid, msg)

    def _info(self) -> PeerInfo:
        if self._describe is not None:
            return self._describe()
        return local_peer_info(self.identity, self.host, self.port,
                               paired=bool(self.trust.list()))

    def _hello(self, rid: bytes, msg: Message) -> None:
        now = time.monotonic()
        s = self._session
        if s is not None and (s.expires <= now or s.rid == rid):
            self._session = s = None  # abandoned: it tested no code, so it costs no try
        if s is not None or now < self._busy_until:
            self._refuse(rid, "busy", "another pairing attempt is in progress")
            return
        name, msg_a = msg.meta.get("name"), msg.meta.get("pake")
        if not (_valid_name(name) and _valid_pake(msg_a)):
            self._refuse(rid, "bad_request", "malformed hello")
            return
        with self._lock:
            digits = pairing_code.normalize(self._code)
        assert digits is not None
        pake = pairing_code.worker_pake(digits)
        msg_b = pake.start()
        try:
            key = pake.finish(msg_a)
        except Exception:  # not a point on the curve, reflected message, ...
            self._refuse(rid, "bad_request", "malformed key exchange message")
            return
        self._session = _Session(rid, name, msg_a, msg_b, key, now + self.session_timeout)
        self._send(rid, "challenge", {"name": self.identity.name, "pake": msg_b,
                                      "public_key": self.identity.public_key})

    def _confirm(self, rid: bytes, msg: Message) -> None:
        s = self._session
        if s is None or s.rid != rid or s.expires <= time.monotonic():
            self._refuse(rid, "no_session", "the attempt took too long, try again")
            return
        self._session = None  # one confirmation per exchange: one guess per exchange
        master_key, mac = msg.meta.get("public_key"), msg.meta.get("mac")
        if not is_public_key(master_key) or master_key == self.identity.public_key:
            self._refuse(rid, "bad_request", "malformed public key")
            return
        th = pairing_code.transcript(PROTOCOL_VERSION, s.master_name, self.identity.name,
                                     s.master_msg, s.worker_msg, master_key,
                                     self.identity.public_key)
        if not pairing_code.mac_ok(pairing_code.confirmation(s.shared_key, "master", th), mac):
            self._wrong_code(rid)
            return
        peer = TrustedPeer(public_key=master_key, name=s.master_name, role="master")
        try:
            self.trust.add(peer)
        except (TpiError, OSError) as e:
            log.error("pairing server: cannot store the master's key: %s", e)
            self._refuse(rid, "error", "it could not save the pairing, see its console")
            return
        self._send(rid, "paired", {"mac": pairing_code.confirmation(s.shared_key, "worker", th)})
        self._new_code()  # a code is good for one pairing only
        self._callback(self.on_paired, peer)

    def _wrong_code(self, rid: bytes) -> None:
        self._failures += 1
        left = self.max_tries - self._failures
        if left <= 0:
            self._new_code()
            meta = {"reason": "expired", "tries_left": 0}
        else:
            meta = {"reason": "wrong_code", "tries_left": left}
        # Answer late, and take no new attempt meanwhile: guessing stays slow.
        due = time.monotonic() + self.failure_delay
        self._busy_until = due
        meta.update(name=self.identity.name, version=PROTOCOL_VERSION, detail="")
        self._delayed.append((due, rid, list(encode("refused", meta))))

    def _new_code(self) -> None:
        with self._lock:
            self._code = pairing_code.new_code()
            self._failures = 0
            code = self._code
        self._callback(self.on_new_code, code)

    @staticmethod
    def _callback(fn: Callable[[Any], None] | None, arg: Any) -> None:
        if fn is None:
            return
        try:
            fn(arg)
        except Exception:
            log.exception("pairing server: callback failed")


# ---------------------------------------------------------------- master side


class _Client:
    """One DEALER to a pairing port, with an overall deadline."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.MAXMSGSIZE, _MAX_FRAME)
        self.sock.ipv6 = "[" in endpoint
        self.peer_name = endpoint  # until the worker tells us its name

    def __enter__(self) -> _Client:
        try:
            self.sock.connect(self.endpoint)
        except zmq.ZMQError as e:
            self.close()
            raise PairingError(f"'{self.endpoint}' is not a valid address ({e}); use "
                               "host:port as the worker prints it.") from e
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()

    def who(self) -> str:
        return f"peer '{self.peer_name}'" if self.peer_name != self.endpoint else \
            f"the device at {self.endpoint}"

    def request(self, op: str, meta: dict[str, Any], expect: set[str]) -> Message:
        self.sock.send_multipart(encode(op, meta))
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                raise PairingError(
                    f"no answer from {self.who()} within {self.timeout:g} s; check that the "
                    "worker is running and the address is right.")
            frames = self.sock.recv_multipart()
            try:
                msg = decode(frames, OPS_TO_MASTER, LIMITS)
            except ProtocolError as e:
                v = _claimed_version(frames)
                if v is not None and v != PROTOCOL_VERSION:
                    raise PairingError(f"{self.who()} {_version_text(v)}.") from e
                raise PairingError(f"{self.who()} answered with something that is not a TPI "
                                   f"Chat pairing message ({e})") from e
            if msg.op not in expect and msg.op != "refused":
                continue  # a late answer to an earlier request: not ours
            if _valid_name(msg.meta.get("name")):
                self.peer_name = msg.meta["name"]
            if msg.op == "refused":
                raise self.refusal(msg.meta)
            return msg

    def refusal(self, meta: dict[str, Any]) -> PairingError:
        reason = meta.get("reason")
        who = self.who()
        if reason == "wrong_code":
            left = meta.get("tries_left")
            left = left if isinstance(left, int) else 0
            return PairingError(f"{who} refused the pairing code ({_tries(left)}).")
        if reason == "expired":
            return PairingError(f"{who} refused the pairing code: the code has expired, the "
                                "worker shows a new one.")
        if reason == "busy":
            return PairingError(f"{who} is busy with another pairing attempt; try again in a "
                                "few seconds.")
        if reason == "version":
            v = meta.get("version")
            return PairingError(f"{who} {_version_text(v if isinstance(v, int) else -1)}.")
        detail = meta.get("detail") if isinstance(meta.get("detail"), str) else ""
        return PairingError(f"{who} refused the pairing: {detail[:200] or reason}.")


def pair_with(endpoint: str, code: str, my_identity: Identity, timeout: float = 10.0, *,
              trust: TrustStore | None) -> PairedPeer:
    """Master side: pair with the worker at `endpoint` using the code the user typed.

    On success the worker's key is added to `trust` (the master's store of workers; pass
    None only to store it yourself) and the worker has stored ours. Raises PairingError.
    """
    if trust is not None and trust.role != "worker":
        raise ValueError("a master stores workers")
    digits = pairing_code.normalize(code)
    if digits is None:
        raise PairingError(f"'{code}' is not a pairing code; type the 6 digits the worker "
                           "shows, like 482-913.")
    pake = pairing_code.master_pake(digits)
    msg_a = pake.start()
    with _Client(endpoint, timeout) as c:
        ch = c.request("hello", {"name": my_identity.name, "pake": msg_a}, {"challenge"})
        name, msg_b, worker_key = (ch.meta.get(k) for k in ("name", "pake", "public_key"))
        if not (_valid_name(name) and _valid_pake(msg_b) and is_public_key(worker_key)):
            raise PairingError(f"{c.who()} sent a malformed pairing message; is it a TPI Chat "
                               "worker?")
        try:
            key = pake.finish(msg_b)
        except Exception as e:
            raise PairingError(f"{c.who()} sent a malformed key exchange message; is it a "
                               "TPI Chat worker?") from e
        th = pairing_code.transcript(PROTOCOL_VERSION, my_identity.name, name, msg_a, msg_b,
                                     my_identity.public_key, worker_key)
        mac = pairing_code.confirmation(key, "master", th)
        done = c.request("confirm", {"public_key": my_identity.public_key, "mac": mac},
                         {"paired"})
        if not pairing_code.mac_ok(pairing_code.confirmation(key, "worker", th),
                                   done.meta.get("mac")):
            raise PairingError(f"{c.who()} could not prove it knows the pairing code, so it was "
                               "not paired; unpair it on the worker and pair again.")
    peer = PairedPeer(name=name, public_key=worker_key, endpoint=endpoint)
    if trust is not None:
        trust.add(TrustedPeer(public_key=worker_key, name=name, role="worker",
                              address=endpoint))
    return peer


def query_info(endpoint: str, timeout: float = 3.0) -> dict[str, Any]:
    """Ask a pairing port who it is: the TXT-style map a worker would advertise."""
    with _Client(endpoint, timeout) as c:
        msg = c.request("info", {}, {"info"})
    txt = msg.meta.get("txt")
    if not isinstance(txt, dict):
        raise PairingError(f"the device at {endpoint} sent a malformed info answer; is it a "
                           "TPI Chat worker?")
    return txt
