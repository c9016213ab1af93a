"""The pairing code and the cryptography that turns it into a confirmed shared key.

The worker shows a 6-digit code ("482-913"); the user types it into the app. Both sides
run SPAKE2 with the code as password: an eavesdropper learns nothing about the code, and
an active attacker gets exactly one guess per exchange (which the worker counts). The
SPAKE2 key is then used only for key confirmation: HMAC-SHA256 over a transcript that
binds the protocol name and version, both device names, both SPAKE2 messages and both
CURVE public keys. A matching MAC proves the other side used the same code, and that the
public key it sent is the one the user meant to pair with.

Order matters: the master (who guesses) must prove knowledge of the code first. If the
worker sent its MAC first, a master with a wrong code could test every candidate code
offline against that MAC; this way the worker only ever answers yes or no.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from spake2 import SPAKE2_A, SPAKE2_B

PROTOCOL_NAME = b"tpi-chat-pairing"
CODE_DIGITS = 6
# SPAKE2 identities: the protocol name binds the key to this use, the role names stop a
# reflected message from being accepted as the other side's.
ID_MASTER = PROTOCOL_NAME + b"/master"
ID_WORKER = PROTOCOL_NAME + b"/worker"
MAC_BYTES = 32


def new_code() -> str:
    """A fresh code as shown to the user: six random digits, "482-913"."""
    digits = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
    return f"{digits[:3]}-{digits[3:]}"


def normalize(code: str) -> str | None:
    """The six digits of a code as typed ("482-913", "482 913", "482913"), or None."""
    digits = "".join(ch for ch in code if ch not in " -")
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits


def master_pake(digits: str) -> SPAKE2_A:
    return SPAKE2_A(digits.encode("ascii"), idA=ID_MASTER, idB=ID_WORKER)


def worker_pake(digits: str) -> SPAKE2_B:
    return SPAKE2_B(digits.encode("ascii"), idA=ID_MASTER, idB=ID_WORKER)


def transcript(version: int, master_name: str, worker_name: str, master_msg: bytes,
               worker_msg: bytes, master_key: str, worker_key: str) -> bytes:
    """Hash of everything both sides must agree on; length-prefixed so fields can't shift."""
    h = hashlib.sha256()
    for part in (PROTOCOL_NAME, str(version).encode(), master_name.encode(),
                 worker_name.encode(), master_msg, worker_msg, master_key.encode(),
                 worker_key.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def confirmation(shared_key: bytes, side: str, transcript_hash: bytes) -> bytes:
    """The key-confirmation MAC `side` ("master" or "worker") sends."""
    # Separate sub-keys per direction: one side's MAC can never be replayed as the other's.
    subkey = hmac.new(shared_key, b"confirm/" + side.encode(), hashlib.sha256).digest()
    return hmac.new(subkey, transcript_hash, hashlib.sha256).digest()


def mac_ok(expected: bytes, received: object) -> bool:
    return isinstance(received, bytes) and hmac.compare_digest(expected, received)
