"""Pairing: a worker and a master exchange CURVE public keys, authenticated by a short code.

The user opens pairing on the worker (pairing_window.py), which shows a 6-digit code
for a few minutes; the master (the app's Add device, or `tpi-chat pair`) calls
`pairing_client.pair_with` with the code the user typed. Over the pairing port's
length-prefixed TCP frames (pairing_wire.py; nothing secret crosses it):

    master -> worker   hello    {name, pake: SPAKE2 message A}
    worker -> master   challenge {name, pake: SPAKE2 message B, public_key}
    master -> worker   confirm  {public_key, mac: master's key confirmation}
    worker -> master   paired   {mac: worker's key confirmation}     (trusts the master)
                   or  refused  {reason, name, version, detail, tries_left, retry_after}

See pairing_code.py for why the master confirms first. One connection carries one
attempt; a wrong code is answered after a short delay and counts against the window,
which locks after a few. The same port answers `info` (the manual host:port fallback
when mDNS is unavailable) whether pairing is open or not. The worker's side is
pairing_server.py, the master's pairing_client.py; this module holds what both share.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.cluster.identity import MAX_NAME_CHARS, fingerprint
from core.errors import PeerError

OPS_TO_WORKER = frozenset({"info", "hello", "confirm"})
OPS_TO_MASTER = frozenset({"info", "challenge", "paired", "refused"})
PAKE_BYTES = 33  # side byte + Ed25519 element

# Refusal reasons (the "reason" of a refused message).
CLOSED = "closed"  # no pairing window is open on the worker
WRONG_CODE = "wrong_code"  # with tries_left >= 1
LOCKED = "locked"  # the last try was wrong: the window closed, the code is gone
SLOW_DOWN = "slow_down"  # too many attempts or connections from this address (retry_after)
BUSY = "busy"  # too many connections open
VERSION = "version"
BAD_REQUEST = "bad_request"
NO_SESSION = "no_session"
ERROR = "error"


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


def valid_name(x: object) -> bool:
    return isinstance(x, str) and 0 < len(x) <= MAX_NAME_CHARS and x.isprintable()


def valid_pake(x: object) -> bool:
    return isinstance(x, bytes) and len(x) == PAKE_BYTES
