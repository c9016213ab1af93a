"""Test helper process: a stand-in for `tpi-chat worker` (pairing port + mDNS advert).

Used by the Add device tests only when core/worker.py is not available. Prints the same
console lines as the real worker ("worker 'NAME' (FP) on HOST:PORT, ...", "pairing code:
482-913", "paired with 'NAME'") and exits cleanly, with an mDNS goodbye, on SIGINT/SIGTERM.

Usage: python -m tests.app.standin_worker NAME DATA_DIR
"""

from __future__ import annotations

import signal
import sys
import threading

from core.cluster.discovery import Advertiser
from core.cluster.identity import load_or_create
from core.cluster.pairing import PairingServer
from core.cluster.peer_info import local_peer_info
from core.cluster.trust import TrustStore

HOST = "127.0.0.1"


def main() -> int:
    name, data_dir = sys.argv[1], sys.argv[2]
    identity = load_or_create(data_dir, name=name)
    trust = TrustStore.open("master", data_dir)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    holder: dict[str, PairingServer] = {}

    def describe():
        return local_peer_info(identity, HOST, holder["server"].port, bool(trust.list()))

    server = PairingServer(identity, trust, HOST, 0,
                           on_new_code=lambda c: print(f"pairing code: {c}", flush=True),
                           on_paired=lambda p: print(f"paired with '{p.name}'", flush=True),
                           describe=describe)
    holder["server"] = server
    adv = Advertiser(describe(), HOST, server.port)
    print(f"worker '{identity.name}' ({identity.fingerprint}) on {HOST}:{server.port}, "
          "control port 0", flush=True)
    print(f"pairing code: {server.code}", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        adv.close()
        server.close()
        print("worker stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
