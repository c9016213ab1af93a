"""The master's side of pairing: `pair_with` (the app's Add device, `tpi-chat pair`) and
`query_info` (the manual host:port lookup), one short TCP connection each.

What a worker answers is read through pairing_wire.FrameSocket: at most 4 KB a frame and
16 KB a connection, every wait bounded by the caller's timeout, so a fake worker can
neither grow nor hold the app. Every failure is a PairingError worded for the user.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from core.cluster import pairing_code
from core.cluster.identity import Identity, is_public_key
from core.cluster.pairing import (
    BUSY,
    CLOSED,
    LOCKED,
    NO_SESSION,
    OPS_TO_MASTER,
    SLOW_DOWN,
    VERSION,
    WRONG_CODE,
    PairedPeer,
    PairingError,
    valid_name,
    valid_pake,
)
from core.cluster.pairing_wire import (
    PROTOCOL_VERSION,
    FrameSocket,
    Message,
    WireError,
    pack,
    unpack,
)
from core.cluster.trust import TrustedPeer, TrustStore
from core.comm.endpoint import host_of

OPEN_HINT = "run `tpi-chat worker --pair` there, or press P in its console"


def _tries(n: int) -> str:
    return f"{n} {'try' if n == 1 else 'tries'} left"


def _version_text(theirs: int) -> str:
    if theirs < 0:
        return ("speaks an older TPI Chat pairing protocol; install the same TPI Chat "
                "version on both devices")
    return (f"speaks protocol {theirs}, this device speaks {PROTOCOL_VERSION}; install the "
            "same TPI Chat version on both devices")


def _int(x: object, default: int) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) else default


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    host = host_of(endpoint) or host.removeprefix("tcp://").strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PairingError(f"'{endpoint}' is not a valid address; use host:port as the "
                           "worker prints it.")
    return host, int(port)


class _Client:
    """One connection to a pairing port, with an overall deadline."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint, self.timeout = endpoint, timeout
        self.host, self.port = _split(endpoint)
        self.where = f"{self.host}:{self.port}"
        self.peer_name = ""  # until the worker tells us its name
        self.sock: socket.socket | None = None
        self.frames: FrameSocket | None = None

    def __enter__(self) -> _Client:
        deadline = time.monotonic() + self.timeout
        try:
            self.sock = socket.create_connection((self.host, self.port), self.timeout)
        except TimeoutError:
            raise self._silent() from None
        except ConnectionRefusedError:
            raise PairingError(f"nothing answers on {self.where}; check that `tpi-chat "
                               "worker` runs there and that this is the address it "
                               "prints.") from None
        except OSError as e:
            raise PairingError(f"cannot reach {self.where} ({e.strerror or e}); check the "
                               "address and that both devices are on the same "
                               "network.") from None
        self.frames = FrameSocket(self.sock, deadline)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close()

    def who(self) -> str:
        return f"'{self.peer_name}'" if self.peer_name else f"the device at {self.where}"

    def _silent(self) -> PairingError:
        return PairingError(f"no answer from {self.who()} within {self.timeout:g} s; check "
                            "that the worker is running and the address is right.")

    def request(self, op: str, meta: dict[str, Any], expect: str) -> Message:
        assert self.frames is not None
        try:
            self.frames.send(pack(op, meta))
            msg = unpack(self.frames.recv(), OPS_TO_MASTER)
        except TimeoutError:
            raise self._silent() from None
        except WireError as e:
            if e.version is not None:
                raise PairingError(f"{self.who()} {_version_text(e.version)}.") from None
            raise PairingError(f"{self.who()} answered with something that is not a TPI "
                               f"Chat pairing message ({e}); is it a TPI Chat "
                               "worker?") from None
        except OSError as e:
            why = f" ({e.strerror})" if e.strerror else ""
            raise PairingError(f"{self.who()} closed the connection without answering{why}; "
                               "try again, and check that it runs TPI Chat.") from None
        if valid_name(msg.meta.get("name")):
            self.peer_name = msg.meta["name"]
        if msg.op == "refused":
            raise self.refusal(msg.meta)
        if msg.op != expect:
            raise PairingError(f"{self.who()} answered '{msg.op}' to '{op}'; is it a TPI Chat "
                               "worker?")
        return msg

    def refusal(self, meta: dict[str, Any]) -> PairingError:
        reason, who = meta.get("reason"), self.who()
        if reason == CLOSED:
            return PairingError(f"{who} is not accepting pairing right now: open pairing on "
                                f"the device ({OPEN_HINT}), then type the code it shows.")
        if reason == WRONG_CODE:
            return PairingError(f"{who} refused the code "
                                f"({_tries(max(1, _int(meta.get('tries_left'), 1)))}).")
        if reason == LOCKED:
            return PairingError(f"{who} refused the code and is now locked: open pairing "
                                "again on the device (it shows a new code).")
        if reason == SLOW_DOWN:
            wait = max(1, _int(meta.get("retry_after"), 60))
            return PairingError(f"{who} is turning away pairing attempts from this computer "
                                f"for now (too many in a short time); try again in "
                                f"{_duration(wait)}.")
        if reason == BUSY:
            return PairingError(f"{who} has too many pairing connections open; try again in "
                                "a few seconds.")
        if reason == NO_SESSION:
            return PairingError(f"{who} lost track of the attempt; try again.")
        if reason == VERSION:
            v = _int(meta.get("version"), -1)
            return PairingError(f"{who} {_version_text(v)}.")
        detail = meta.get("detail") if isinstance(meta.get("detail"), str) else ""
        return PairingError(f"{who} refused the pairing: {detail[:200] or reason}.")


def _duration(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{(seconds + 59) // 60} minutes"


def pair_with(endpoint: str, code: str, my_identity: Identity, timeout: float = 10.0, *,
              trust: TrustStore | None) -> PairedPeer:
    """Master side: pair with the worker at `endpoint` ("tcp://host:port") using the code
    the user typed.

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
        ch = c.request("hello", {"name": my_identity.name, "pake": msg_a}, "challenge")
        name, msg_b, worker_key = (ch.meta.get(k) for k in ("name", "pake", "public_key"))
        if not (valid_name(name) and valid_pake(msg_b) and is_public_key(worker_key)):
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
                         "paired")
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
        msg = c.request("info", {}, "info")
    txt = msg.meta.get("txt")
    if not isinstance(txt, dict):
        raise PairingError(f"{c.who()} sent a malformed info answer; is it a TPI Chat "
                           "worker?")
    return txt
