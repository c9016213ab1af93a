"""Test helper process: advertise one fake worker on loopback, driven by stdin.

Usage: python -m tests.core.cluster.advertiser_child NAME FINGERPRINT PORT
stdin lines (JSON): {"op": "update", "fields": {...}} or {"op": "quit"}; EOF = quit.
Prints "ready", "updated", "bye" on stdout so the test knows where it is.
"""

from __future__ import annotations

import json
import sys

from core.cluster.discovery import Advertiser
from core.cluster.peer_info import PeerInfo


def main() -> None:
    name, fp, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    info = PeerInfo(name=name, address="127.0.0.1", port=port, version=1,
                    mem_total=8 * 2 ** 30, mem_free=5 * 2 ** 30, cores=4,
                    platform="Linux-x86_64", fingerprint=fp, paired=False, control_port=0)
    adv = Advertiser(info, "127.0.0.1", port)
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "update":
                adv.update(**cmd["fields"])
                print("updated", flush=True)
            elif cmd["op"] == "quit":
                break
    finally:
        adv.close()  # sends the zeroconf goodbye
    print("bye", flush=True)


if __name__ == "__main__":
    main()
