"""What a worker tells the world about itself, and its TXT-record encoding.

The same string map travels in the mDNS TXT record and in the pairing port's "info"
answer (the manual host:port fallback), so both paths share one validator. Anything a
stranger on the network sends through here is untrusted: `from_txt` returns None for a
record that does not parse instead of raising, so one odd device cannot break the list.

TXT keys: v (protocol version), name, mem_total / mem_free (bytes), cores, platform,
fp (key fingerprint), paired (0/1), ctl (CURVE control port, 0 until it listens).
The service's SRV port is the worker's plaintext pairing/info port.
"""

from __future__ import annotations

import platform as _platform
import re
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

from core.cluster.identity import MAX_NAME_CHARS, Identity
from core.comm.endpoint import tcp_endpoint
from core.cpu import usable_cores

_FP_RE = re.compile(r"^[0-9a-f]{4}(-[0-9a-f]{4}){3}$")
_MAX_PLATFORM_CHARS = 64
_MAX_INT = 2 ** 62


@dataclass(frozen=True)
class PeerInfo:
    """A worker as seen from the network (discovered or probed)."""

    name: str
    address: str
    port: int  # pairing/info port (plaintext; the protocol protects what matters)
    version: int
    mem_total: int
    mem_free: int
    cores: int
    platform: str
    fingerprint: str
    paired: bool
    control_port: int = 0

    @property
    def endpoint(self) -> str:
        """ZeroMQ endpoint of the pairing/info port."""
        return tcp_endpoint(self.address, self.port)

    def to_txt(self) -> dict[str, str]:
        return {"v": str(self.version), "name": self.name, "mem_total": str(self.mem_total),
                "mem_free": str(self.mem_free), "cores": str(self.cores),
                "platform": self.platform, "fp": self.fingerprint,
                "paired": "1" if self.paired else "0", "ctl": str(self.control_port)}

    @classmethod
    def from_txt(cls, txt: Mapping[bytes | str, bytes | str | None], address: str,
                 port: int) -> PeerInfo | None:
        """Parse a TXT map (bytes or str keys/values); None when anything is off."""
        try:
            d = {_text(k): _text(v) for k, v in txt.items()}
            name, plat, fp = d["name"], d["platform"], d["fp"]
            if not (0 < len(name) <= MAX_NAME_CHARS and name.isprintable()):
                return None
            if len(plat) > _MAX_PLATFORM_CHARS or not plat.isprintable():
                return None
            if not _FP_RE.match(fp) or d["paired"] not in ("0", "1"):
                return None
            if not 0 < port < 65536:
                return None
            ctl = _nat(d.get("ctl", "0"))
            if ctl > 65535:
                return None
            return cls(name=name, address=address, port=port, version=_nat(d["v"]),
                       mem_total=_nat(d["mem_total"]), mem_free=_nat(d["mem_free"]),
                       cores=_nat(d["cores"]), platform=plat, fingerprint=fp,
                       paired=d["paired"] == "1", control_port=ctl)
        except (KeyError, ValueError, TypeError, UnicodeDecodeError):
            return None


def _text(x: bytes | str | None) -> str:
    if x is None:
        raise ValueError("TXT key without value")
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _nat(s: str) -> int:
    """A non-negative decimal integer, strictly (no signs, spaces or underscores)."""
    if not (s.isascii() and s.isdigit()) or len(s) > 19:
        raise ValueError(s)
    n = int(s)
    if n > _MAX_INT:
        raise ValueError(s)
    return n


def local_peer_info(identity: Identity, address: str, port: int, paired: bool,
                    control_port: int = 0) -> PeerInfo:
    """This device described for discovery: memory, cores and platform read now."""
    # Imported here: the codec pulls in torch, which an advertiser alone does not need.
    from core.comm.codec import PROTOCOL_VERSION

    mem = psutil.virtual_memory()
    return PeerInfo(name=identity.name, address=address, port=port,
                    version=PROTOCOL_VERSION, mem_total=int(mem.total),
                    mem_free=int(mem.available), cores=usable_cores(),
                    platform=f"{_platform.system()}-{_platform.machine()}"[:_MAX_PLATFORM_CHARS],
                    fingerprint=identity.fingerprint, paired=paired,
                    control_port=control_port)
