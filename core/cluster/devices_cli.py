"""`tpi-chat pair` and `tpi-chat devices`: enrolling devices without a screen.

Both use the data folder the app uses (identity, trust store, devices.json), so a device
paired here is the app's too, and the other way round.
"""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from core.cluster.discovery import probe_manual
from core.cluster.identity import default_data_dir, load_or_create
from core.cluster.pairing_client import pair_with
from core.cluster.roster import DEFAULT_BUDGET, Roster
from core.cluster.worker_ping import split_answering
from core.cluster.worker_protocol import parse_size
from core.comm.endpoint import parse_host_port
from core.errors import TpiError


def data_dir_of(args: Namespace) -> Path:
    return Path(args.data_dir).expanduser() if getattr(args, "data_dir", None) \
        else default_data_dir()


def cmd_pair(args: Namespace) -> int:
    hp = parse_host_port(args.address)
    if hp is None:
        raise TpiError(f"'{args.address}' is not HOST:PORT; the worker prints it, like "
                       "'on 192.168.1.20:47000'")
    try:
        budget = parse_size(args.budget) if args.budget else DEFAULT_BUDGET
    except ValueError as e:
        raise TpiError(str(e)) from None
    roster = Roster(data_dir_of(args))
    me = load_or_create(roster.data_dir)
    host, port = hp
    peer = probe_manual(host, port)
    paired = pair_with(peer.endpoint, args.code, me, trust=roster.trust)
    dev = roster.enroll(paired.public_key, peer, budget)
    print(f"paired with '{dev.name}' ({dev.fingerprint}) at {host}:{port}; it may use "
          f"{budget / 2**30:.1f} GiB", flush=True)
    return 0


def cmd_devices(args: Namespace) -> int:
    roster = Roster(data_dir_of(args))
    devices = roster.devices()
    if not devices:
        print("no paired devices; `tpi-chat pair HOST:PORT --code NNN-NNN` pairs one")
        return 0
    reachable = [d for d in devices if d.control_endpoint]
    me = load_or_create(roster.data_dir)
    answering, _ = split_answering([d.spec() for d in reachable], me)
    up = {s.public_key for s in answering}
    width = max(len(d.name) for d in devices)
    for d in devices:
        state = ("answers" if d.public_key in up else
                 "no answer" if d.control_endpoint else "control port unknown: pair again")
        where = f"{d.address}:{d.port}" if d.address else "address unknown"
        budget = (d.memory_budget or DEFAULT_BUDGET) / 2**30
        print(f"{d.name:<{width}}  {d.fingerprint}  {where:<21}  {budget:5.1f} GiB  {state}")
    return 0
