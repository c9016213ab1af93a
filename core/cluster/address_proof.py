"""Is an enrolled device really at the address an announcement gave? It is when a CURVE
ping there, expecting the device's enrolled public key, is answered: only the holder of
the matching secret key can complete that handshake (and our key must be on its list).

mDNS announcements are unauthenticated, so a stranger on the LAN can announce any
fingerprint at any address; without this check the master would save the stranger's
address for a paired device and connect there next time.
"""

from __future__ import annotations

from core.cluster.roster import EnrolledDevice
from core.cluster.worker_ping import answers
from core.comm.curve import KeyPair

PROOF_TIMEOUT_S = 4.0


def proves_key(dev: EnrolledDevice, identity: KeyPair,
               timeout: float = PROOF_TIMEOUT_S) -> bool:
    """True when `dev`'s control endpoint answers a ping as `dev.public_key`."""
    return bool(dev.control_endpoint) and answers(dev.spec(), identity, timeout)
