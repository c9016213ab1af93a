"""`tpi-chat worker`: the headless peer daemon on a device that lends its memory and CPU.

It keeps its identity and trusted masters in --data-dir, answers info (and pairing,
while the user has opened it) on its plaintext pairing port (--port), advertises itself
over mDNS on --host only, and serves paired masters on a CURVE control port (ZAP
allow-list = trusted masters, checked at each connect, so unpairing is live): ping,
info, shard shipping into DIR/shards (a folder per master, within a disk quota),
run_rank / stop_rank, unpair. See core/cluster/worker_protocol.py. SIGINT/SIGTERM stop
the ranks and unregister mDNS.

Pairing is closed until the user opens it on the device: `--pair [MINUTES]` at start,
P in the console, or `tpi-chat worker --pair` while this worker runs (as a service, say:
it asks the running worker through the data folder, see pairing_request.py). A window
shows a fresh code for 5 minutes and closes after one pairing or 3 wrong codes.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import psutil

from core.cluster.discovery import Advertiser
from core.cluster.identity import default_data_dir, load_or_create
from core.cluster.pairing_console import watch_console
from core.cluster.pairing_request import DaemonLock, PairingRequests, ask_running_worker
from core.cluster.pairing_server import PairingServer
from core.cluster.pairing_window import (
    DEFAULT_MINUTES,
    LOCKED,
    MAX_MINUTES,
    PAIRED,
    PairingEvent,
    PairingGate,
)
from core.cluster.peer_info import PeerInfo, local_peer_info
from core.cluster.rank_runner import RankRunner
from core.cluster.shard_store import ShardStore
from core.cluster.ship_messages import REQUEST_OPS
from core.cluster.ship_receiver import serve_shipping
from core.cluster.trust import TrustStore
from core.cluster.worker_measure import DeviceMeasurer, EchoBudget
from core.cluster.worker_ports import bind_preferring, save_ports, saved_ports
from core.cluster.worker_protocol import TO_WORKER, RunRank, parse_size
from core.comm.codec import CodecLimits, Message
from core.comm.control import BadMessage, ControlServer
from core.comm.curve import CurveServerConfig
from core.comm.endpoint import host_of
from core.errors import PeerError, ProtocolError, TpiError

log = logging.getLogger(__name__)
REFRESH_S = 5.0  # how often free memory / paired state is re-advertised
_REOPEN = "press P here or run `tpi-chat worker --pair` on this device"
LOG_EVERY_S = 1.0  # refused control messages: at most one log line per second
# Shipping chunks are the largest control messages (see ship_messages.MAX_CHUNK).
LIMITS = CodecLimits(max_header_bytes=256 * 1024, max_total_bytes=8 * 2**20 + 2**20,
                     max_tensors=1)


def _say(text: str) -> None:
    print(text, flush=True)


def check_reachable(endpoint: str, timeout: float = 1.5) -> None:
    """Refuse run_rank at once when the master's control port cannot be reached from
    here: a rank would only wait for a setup that never comes. Short: the control loop
    (and so every master's heartbeat) waits for it."""
    host, port = host_of(endpoint), int(endpoint.rsplit(":", 1)[1])
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ProtocolError(f"this device cannot reach the master at {host} port {port} "
                            f"({e.strerror or e})") from None


def _lan_address() -> str:
    """Without --host: the first non-loopback IPv4 address of this device, for mDNS."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return "127.0.0.1"


class WorkerDaemon:
    """Everything `tpi-chat worker` runs; `serve(stop)` blocks until stop is set."""

    def __init__(self, data_dir: Path, name: str | None = None, host: str | None = None,
                 port: int = 0, memory_budget: int | None = None,
                 shard_quota: int | None = None):
        self.data_dir = Path(data_dir)
        self.identity = load_or_create(self.data_dir, name=name or socket.gethostname())
        self.trust = TrustStore.open("master", self.data_dir)
        self.bind = host or "0.0.0.0"
        self.address = host or _lan_address()
        self.budget = memory_budget
        self.ranks = RankRunner(self.identity, self.address, self.data_dir / "logs")
        self.measurer = DeviceMeasurer(self.data_dir, self.data_dir / "shards",
                                       busy=lambda: bool(self.ranks.procs))
        self.echoes = EchoBudget()
        self.shards = ShardStore(self.data_dir / "shards", shard_quota, busy=self.ranks.uses)
        self.refused = 0  # bad control messages seen (strangers never get this far)
        self._last_note = -LOG_EVERY_S
        last = saved_ports(self.data_dir)
        curve = CurveServerConfig(self.identity, self.trust.contains)
        self.ctl = bind_preferring(lambda p: ControlServer(
            self.bind, ops=TO_WORKER, limits=LIMITS, curve=curve, port=p), last.get("control"))
        self.ctl_port = int(self.ctl.endpoint.rsplit(":", 1)[1])
        self.gate = PairingGate(on_event=self._pairing_event)
        self.requests = PairingRequests(self.data_dir)

        def pairing_on(p: int) -> PairingServer:
            return PairingServer(self.identity, self.trust, self.bind, p, gate=self.gate,
                                 on_paired=lambda peer: _say(f"paired with '{peer.name}'"),
                                 describe=self.describe)

        try:  # an explicit --port is taken as asked, or fails
            self.pairing = pairing_on(port) if port else bind_preferring(
                pairing_on, last.get("pairing"))
        except BaseException:
            self.ctl.close()
            raise
        save_ports(self.data_dir, self.ctl_port, self.pairing.port)
        self.advertiser: Advertiser | None = None

    def describe(self) -> PeerInfo:
        info = local_peer_info(self.identity, self.address, self.pairing.port,
                               bool(self.trust.list()), self.ctl_port)
        if self.budget:  # offer what the user granted, not the whole device
            from dataclasses import replace
            info = replace(info, mem_total=min(info.mem_total, self.budget),
                           mem_free=min(info.mem_free, self.budget))
        return info

    def announce(self, pair_minutes: float | None = None) -> None:
        _say(f"worker '{self.identity.name}' ({self.identity.fingerprint}) on "
             f"{self.address}:{self.pairing.port}, control port {self.ctl_port}")
        if pair_minutes:
            self.gate.open(pair_minutes)
        else:
            _say(f"pairing is closed: {_REOPEN} to let a new master pair for "
                 f"{DEFAULT_MINUTES:g} minutes")

    # -- pairing window --

    def _pairing_event(self, ev: PairingEvent) -> None:
        if ev.kind in ("opened", "extended"):
            until = time.strftime("%H:%M", time.localtime(ev.closes_at))
            again = " again" if ev.kind == "extended" else ""
            _say(f"pairing open{again} until {until} ({ev.seconds_left / 60:.0f} min); "
                 f"pairing code: {ev.code}")
        elif ev.kind == "wrong_code":
            _say(f"wrong pairing code from {ev.peer or 'a master'} "
                 f"({ev.tries_left} {'try' if ev.tries_left == 1 else 'tries'} left)")
        elif ev.kind == "closed":
            self.requests.withdraw()
            if ev.reason == PAIRED:
                _say(f"pairing closed: a code pairs one master; {_REOPEN} to pair another")
            elif ev.reason == LOCKED:
                _say(f"pairing closed after {self.gate.max_tries} wrong codes (locked): "
                     f"{_REOPEN} to open it again with a new code")
            elif ev.reason != "stopped":
                _say(f"pairing closed: its time is up; {_REOPEN} to open it again")

    def watch_pairing_requests(self, stop: threading.Event) -> None:
        """Open pairing when `tpi-chat worker --pair` asks through the data folder."""
        def run() -> None:
            while not stop.wait(0.5):
                try:
                    got = self.requests.take()
                    if got is None:
                        continue
                    rid, minutes = got
                    ev = self.gate.open(minutes)
                    self.requests.answer(rid, name=self.identity.name, code=ev.code,
                                         until=ev.closes_at, minutes=ev.seconds_left / 60,
                                         address=f"{self.address}:{self.pairing.port}")
                except Exception:  # a damaged file: the asking command times out
                    log.exception("pairing request failed")

        threading.Thread(target=run, name="pairing-requests", daemon=True).start()

    def serve(self, stop: threading.Event) -> None:
        self.advertiser = Advertiser(self.describe(), self.address, self.pairing.port)
        threading.Thread(target=self._refresh, args=(stop,), name="advertise-refresh",
                         daemon=True).start()
        while not stop.is_set():
            try:
                self.serve_one()
            except Exception as e:  # the outermost loop: no message ends the daemon
                self._refuse_note(f"internal error ({type(e).__name__})", exc=True)

    def serve_one(self, timeout: float = 0.2) -> None:
        """Receive and answer one control message (or return after `timeout` s).

        A malformed or unacceptable message is answered `refused {message}` (when the
        sender can be told) and logged in one line; nothing a peer sends raises here."""
        try:
            got = self.ctl.recv(timeout=timeout)
        except BadMessage as e:
            self._refuse_note(str(e))
            if e.identity is not None:
                self._reply(e.identity, "refused", {"message": str(e)[:200]})
            return
        if got is None:
            return
        ident, msg = got
        key = self.ctl.last_peer_key or ""
        tensors: list = []
        try:
            op, meta, *rest = self._handle(key, msg)
            tensors = rest[0] if rest else []
        except (ProtocolError, RuntimeError, OSError) as e:
            self._refuse_note(f"{msg.op}: {e}")
            op, meta = "refused", {"message": str(e)[:300]}
        except Exception as e:  # a bug on our side: say so, keep the trace, keep serving
            self._refuse_note(f"{msg.op}: internal error ({type(e).__name__})", exc=True)
            op, meta = "refused", {"message": f"internal error on the worker "
                                              f"({type(e).__name__})"}
        self._reply(ident, op, meta, tensors)

    def _refuse_note(self, why: str, exc: bool = False) -> None:
        """Count a refused message and log it in one line (at most LOG_EVERY_S apart, so
        a peer sending garbage in a loop cannot fill the log)."""
        self.refused += 1
        now = time.monotonic()
        if exc or now - self._last_note >= LOG_EVERY_S:
            self._last_note = now
            log.warning("refused a control message (%d so far): %s", self.refused,
                        why[:200], exc_info=exc)

    def _handle(self, key: str, msg: Message) -> tuple:
        if msg.op == "measure":
            return "measured", self.measurer.answer(msg.meta.get("fresh") is True,
                                                    msg.meta.get("formats"),
                                                    msg.meta.get("start") is not False)
        if msg.op == "echo":
            if len(msg.tensors) != 1:
                raise ProtocolError("echo: send one tensor")
            self.echoes.take(msg.tensors[0].nbytes)
            t = msg.meta.get("t")
            return "echo", {"t": t if isinstance(t, int | float) else 0}, msg.tensors
        if msg.op == "ping":
            t = msg.meta.get("t")
            return "pong", {"t": t if isinstance(t, int | float) else 0,
                            "ranks": self.ranks.status(key),
                            "why": self.ranks.last_words(key)}
        if msg.op in REQUEST_OPS:  # a master's split ids name its own folder only
            return serve_shipping(self.shards.for_master(key), msg)
        if msg.op == "info":
            return "info", {"txt": self.describe().to_txt()}
        if msg.op == "run_rank":
            req = RunRank.from_meta(msg.meta)
            cache = self.shards.for_master(key)
            if not cache.is_complete(req.split_id):
                raise ProtocolError(f"shard {req.split_id} is not on this worker; ship it first")
            check_reachable(req.control)
            cache.touch(req.split_id)
            self.ranks.start(key, req.rank, req.control, cache.rank_dir(req.split_id))
            _say(f"running rank {req.rank} of {req.split_id}")
            return "rank_started", {"rank": req.rank}
        if msg.op == "stop_rank":
            rank = msg.meta.get("rank")
            self.ranks.stop(key, rank if isinstance(rank, int) else None)
            return "rank_stopped", {"rank": rank if isinstance(rank, int) else -1}
        if msg.op == "unpair":
            self.ranks.stop(key)
            removed = self.trust.remove(key)
            self.shards.forget(key)
            for p in removed:
                _say(f"unpaired '{p.name}'")
            return "unpaired", {}
        raise ProtocolError(f"unknown op {msg.op}")

    def _reply(self, ident: bytes, op: str, meta: dict, tensors: list | tuple = ()) -> None:
        try:
            self.ctl.send(ident, op, meta, tensors)
        except PeerError:
            pass  # the master left before its answer
        except Exception as e:  # e.g. a reply we could not encode: that request only
            self._refuse_note(f"could not answer with {op} ({type(e).__name__})", exc=True)

    def _refresh(self, stop: threading.Event) -> None:
        while not stop.wait(REFRESH_S):
            info = self.describe()
            try:
                if self.advertiser is not None:
                    self.advertiser.update(mem_free=info.mem_free, paired=info.paired)
            except Exception:  # zeroconf closing under us at shutdown
                log.debug("advertiser refresh failed", exc_info=True)

    def close(self) -> None:
        self.ranks.stop_all()
        if self.advertiser is not None:
            self.advertiser.close()
        self.gate.close()
        self.pairing.close()
        self.ctl.close()
        self.shards.close()


def manage_masters(data_dir: Path, unpair: str | None) -> int:
    """`--masters` / `--unpair NAME|FINGERPRINT|all`: the worker side of unpairing.

    A running daemon sees the change on the master's next connect (the trust store is
    re-read when the file changes), so this works with the daemon up or down."""
    trust = TrustStore.open("master", data_dir)
    peers = trust.list()
    if unpair is None:
        for p in peers:
            _say(f"{p.name}  {p.fingerprint}")
        if not peers:
            _say("no paired masters")
        return 0
    wanted = [p for p in peers if unpair in ("all", p.name, p.fingerprint, p.public_key)]
    if not wanted:
        raise TpiError(f"no paired master is called '{unpair}'; `tpi-chat worker --masters` "
                       f"lists them")
    for p in wanted:
        trust.remove(p.public_key)
        _say(f"unpaired '{p.name}' ({p.fingerprint})")
    return 0


def main(args: argparse.Namespace) -> int:
    if getattr(args, "install_service", False) or getattr(args, "uninstall_service", False):
        from core.cluster import worker_service

        if getattr(args, "pair", None) is not None:
            raise TpiError("the service starts with pairing closed: install it without "
                           "--pair, then run `tpi-chat worker --pair` to pair a master")

        if getattr(args, "install_service", False):
            return worker_service.install_service(args)
        return worker_service.uninstall_service(args)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if args.masters or args.unpair:
        return manage_masters(data_dir, args.unpair)
    try:
        budget = parse_size(args.memory_budget) if args.memory_budget else None
        quota = parse_size(args.shard_quota) if getattr(args, "shard_quota", None) else None
    except ValueError as e:
        raise TpiError(str(e)) from None
    minutes = pair_minutes(args)
    lock = DaemonLock(data_dir)
    if not lock.acquire():
        if minutes is None:
            raise TpiError(f"a worker already runs with the data folder {data_dir}; stop it "
                           "first or give this one another --data-dir (`tpi-chat worker "
                           "--pair` opens pairing on the running one)")
        return open_on_running(data_dir, minutes)
    try:
        return _run(args, data_dir, budget, minutes, quota)
    finally:
        lock.release()


def pair_minutes(args: argparse.Namespace) -> float | None:
    """--pair [MINUTES], checked."""
    minutes = getattr(args, "pair", None)
    if minutes is None:
        return None
    if not 0 < minutes <= MAX_MINUTES:
        raise TpiError(f"--pair takes a number of minutes up to {MAX_MINUTES:g} (default "
                       f"{DEFAULT_MINUTES:g})")
    return float(minutes)


def open_on_running(data_dir: Path, minutes: float) -> int:
    """`tpi-chat worker --pair` while a worker serves `data_dir`: open pairing there."""
    ans = ask_running_worker(data_dir, minutes)
    until = ans.get("until")
    when = time.strftime("%H:%M", time.localtime(until)) if isinstance(
        until, int | float) else "?"
    _say(f"pairing open on the running worker '{ans.get('name')}' at {ans.get('address')} "
         f"until {when}; pairing code: {ans.get('code')}")
    _say("type it in the app's Add device dialog (or `tpi-chat pair "
         f"{ans.get('address')} --code {ans.get('code')}` on the master)")
    return 0


def _run(args: argparse.Namespace, data_dir: Path, budget: int | None,
         minutes: float | None, quota: int | None = None) -> int:
    try:
        daemon = WorkerDaemon(data_dir, args.name, args.host, args.port, budget, quota)
    except (OSError, ValueError) as e:
        raise TpiError(f"cannot start the worker: {e}") from e
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    restore_console = watch_console(stop, daemon.gate.open)
    try:
        daemon.announce(minutes)
        daemon.watch_pairing_requests(stop)
        daemon.serve(stop)
    finally:
        restore_console()
        daemon.close()
        _say("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(0)
