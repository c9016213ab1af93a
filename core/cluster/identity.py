"""This device's identity: a CurveZMQ key pair plus a human name, kept on disk.

The identity is created on first use and stored as JSON in the user data dir
(`platformdirs.user_data_dir("tpi-chat")` unless the caller passes another dir), readable
by the owner only (0600): whoever holds the secret key can impersonate this device to
every paired peer.

The fingerprint is what a user compares by eye (the Add device dialog shows it next to the
one the worker prints): the first 8 bytes of sha256 over the raw 32-byte public key, as
four groups of four hex digits ("1a2b-3c4d-5e6f-7081").
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
import zmq
from zmq.utils import z85

from core.errors import TpiError

APP_NAME = "tpi-chat"
DATA_ENV_VAR = "TPI_CHAT_DATA"
IDENTITY_FILE = "identity.json"
_FORMAT_VERSION = 1
MAX_NAME_CHARS = 64
_Z85_ALPHABET = frozenset(z85.Z85CHARS.decode("ascii"))


class IdentityError(TpiError):
    """The identity file is unreadable or damaged."""


def default_data_dir() -> Path:
    """Where identity, trust stores and the app's data live unless told otherwise:
    $TPI_CHAT_DATA, else the user data folder. The app and the command line share it."""
    override = os.environ.get(DATA_ENV_VAR)
    return Path(override).expanduser() if override else Path(
        platformdirs.user_data_dir(APP_NAME))


def is_public_key(key: object) -> bool:
    """True for a z85 string that decodes to a 32-byte Curve25519 public key."""
    if not isinstance(key, str) or len(key) != 40 or not set(key) <= _Z85_ALPHABET:
        return False
    try:
        raw = z85.decode(key.encode("ascii"))
    except (ValueError, KeyError, struct.error):  # e.g. a 5-char group above 2**32
        return False
    return len(raw) == 32 and z85.encode(raw).decode("ascii") == key


def fingerprint(public_key: str) -> str:
    """Short human-checkable hash of a z85 public key, e.g. "1a2b-3c4d-5e6f-7081"."""
    digest = hashlib.sha256(z85.decode(public_key.encode("ascii"))).hexdigest()[:16]
    return "-".join(digest[i:i + 4] for i in range(0, 16, 4))


def clean_name(name: str) -> str:
    """A device name safe to show and advertise: printable, trimmed, bounded."""
    cleaned = "".join(ch for ch in name if ch.isprintable()).strip()[:MAX_NAME_CHARS]
    return cleaned or "device"


@dataclass(frozen=True)
class Identity:
    """A device's name and CURVE key pair (z85 strings, as libzmq takes them)."""

    name: str
    public_key: str
    secret_key: str = field(repr=False)  # never printed in logs or tracebacks

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    @classmethod
    def generate(cls, name: str) -> Identity:
        public, secret = zmq.curve_keypair()
        return cls(clean_name(name), public.decode("ascii"), secret.decode("ascii"))


def _write_private(path: Path, data: dict, replace: bool) -> bool:
    """Write JSON to `path` atomically with mode 0600.

    replace=False never overwrites an existing file (two processes creating an identity
    at once must end up with the same one): returns False when the file already existed.
    """
    fd, tmp = tempfile.mkstemp(prefix=".identity-", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o600)  # mkstemp already uses 0600; be explicit for the reader
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # atomic create-if-absent
        except FileExistsError:
            return False
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path) -> Identity:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ident = Identity(str(data["name"]), data["public_key"], data["secret_key"])
        if not (is_public_key(ident.public_key) and is_public_key(ident.secret_key)):
            raise ValueError("bad key")
        if zmq.curve_public(ident.secret_key.encode()).decode() != ident.public_key:
            raise ValueError("key pair mismatch")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise IdentityError(
            f"The device identity file {path} is damaged ({type(e).__name__}); delete it to "
            "create a new identity, then pair this device again.") from e
    if os.name == "posix" and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # someone loosened it: the secret key must stay private
    return ident


def load_or_create(data_dir: Path | str | None = None, name: str | None = None) -> Identity:
    """This device's identity, created on first use.

    `name` (default: the host name) is used when creating; when given for an existing
    identity with another name, the stored name is updated (the user renamed the device).
    """
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / IDENTITY_FILE
    if not path.exists():
        fresh = Identity.generate(name or socket.gethostname())
        _write_private(path, _as_json(fresh), replace=False)  # loser of a race reads below
    ident = _read(path)
    if name is not None and clean_name(name) != ident.name:
        ident = Identity(clean_name(name), ident.public_key, ident.secret_key)
        _write_private(path, _as_json(ident), replace=True)
    return ident


def _as_json(ident: Identity) -> dict:
    return {"version": _FORMAT_VERSION, "name": ident.name,
            "public_key": ident.public_key, "secret_key": ident.secret_key}
