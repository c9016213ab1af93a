"""Finding workers on the home network: mDNS/DNS-SD advertise and browse (zeroconf).

A worker runs an `Advertiser` for service type `_tpi-chat._tcp.local.`: the SRV record
points at its plaintext pairing/info port, the TXT record carries a `PeerInfo` (see
peer_info.py). Zeroconf is bound to the one interface address given (`interfaces=[host]`)
so a worker never announces itself on networks the user did not choose.

The app runs a `Browser`, which calls `on_event(PeerEvent)` from zeroconf's browser
thread as workers appear ("add"), change their TXT ("update": free memory, paired) and
leave ("remove": zeroconf sends a goodbye when a worker closes cleanly; a worker that
crashed disappears when its records expire). When multicast does not reach a device
(guest Wi-Fi, VPN), `probe_manual(host, port)` asks the worker's pairing port directly.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from core.cluster.peer_info import PeerInfo
from core.comm.endpoint import tcp_endpoint
from core.errors import PeerError

log = logging.getLogger(__name__)

SERVICE_TYPE = "_tpi-chat._tcp.local."
_RESOLVE_MS = 3000
_MAX_LABEL_BYTES = 63  # DNS label limit for the instance name


def _ip_version(addresses: Sequence[str]) -> IPVersion:
    v6 = [":" in a for a in addresses]
    return IPVersion.All if any(v6) and not all(v6) else (
        IPVersion.V6Only if all(v6) else IPVersion.V4Only)


def instance_name(info: PeerInfo) -> str:
    """A unique, DNS-safe service instance name: device name plus key fingerprint."""
    suffix = "-" + info.fingerprint.replace("-", "")[:8]
    base = "".join(ch if ch.isprintable() and ch != "." else "-" for ch in info.name)
    raw = base.encode("utf-8")[:_MAX_LABEL_BYTES - len(suffix)]
    return raw.decode("utf-8", "ignore") + suffix


class Advertiser:
    """Announces this worker on one interface until close()."""

    def __init__(self, info: PeerInfo, host: str, port: int) -> None:
        self._lock = threading.Lock()
        self._info = dataclasses.replace(info, address=host, port=port)
        self._zc = Zeroconf(interfaces=[host], ip_version=_ip_version([host]))
        self._name = f"{instance_name(self._info)}.{SERVICE_TYPE}"
        self._service = self._service_info(self._name)
        try:
            # Probing for name conflicts takes about a second; allow_name_change keeps a
            # second copy of the same identity from failing outright.
            self._zc.register_service(self._service, allow_name_change=True)
        except BaseException:
            self._zc.close()
            raise
        self._closed = False

    @property
    def info(self) -> PeerInfo:
        return self._info

    def _service_info(self, name: str) -> ServiceInfo:
        fp = self._info.fingerprint.replace("-", "")
        return ServiceInfo(SERVICE_TYPE, name, port=self._info.port,
                           properties=self._info.to_txt(),
                           server=f"tpi-{fp}.local.",
                           parsed_addresses=[self._info.address])

    def update(self, **changes: object) -> PeerInfo:
        """Refresh TXT fields (e.g. mem_free=..., paired=True); address and port stay."""
        if {"address", "port"} & changes.keys():
            raise ValueError("address and port are fixed for an advertiser's lifetime")
        with self._lock:
            self._info = dataclasses.replace(self._info, **changes)  # type: ignore[arg-type]
            # Reuse the registered name: zeroconf may have had to change it.
            self._service = self._service_info(self._service.name)
            self._zc.update_service(self._service)
            return self._info

    def close(self) -> None:
        """Say goodbye (peers see a remove event at once) and stop answering."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._zc.unregister_service(self._service)
            finally:
                self._zc.close()

    def __enter__(self) -> Advertiser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class PeerEvent:
    """A worker appeared ("add"), changed ("update") or left ("remove")."""

    kind: str
    service: str  # mDNS instance name: stable key for one advertised worker
    peer: PeerInfo


class Browser:
    """Watches for workers; `on_event` runs on zeroconf's browser thread, keep it short."""

    def __init__(self, on_event: Callable[[PeerEvent], None],
                 interfaces: Sequence[str] | None = None) -> None:
        self.on_event = on_event
        self._lock = threading.Lock()
        self._peers: dict[str, PeerInfo] = {}
        if interfaces is None:  # every interface: what the app does on a home network
            self._zc = Zeroconf(ip_version=IPVersion.V4Only)
        else:
            self._zc = Zeroconf(interfaces=list(interfaces), ip_version=_ip_version(interfaces))
        self._browser = ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[self._on_change])

    def peers(self) -> dict[str, PeerInfo]:
        """Snapshot of the workers seen now, by service name."""
        with self._lock:
            return dict(self._peers)

    def close(self) -> None:
        self._browser.cancel()
        self._zc.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            with self._lock:
                peer = self._peers.pop(name, None)
            if peer is not None:
                self._emit(PeerEvent("remove", name, peer))
            return
        info = zeroconf.get_service_info(service_type, name, timeout=_RESOLVE_MS)
        peer = _to_peer(info) if info is not None else None
        if peer is None:
            log.debug("ignoring unresolvable or malformed service %s", name)
            return
        with self._lock:
            old = self._peers.get(name)
            self._peers[name] = peer
        if old != peer:
            self._emit(PeerEvent("add" if old is None else "update", name, peer))

    def _emit(self, event: PeerEvent) -> None:
        try:
            self.on_event(event)
        except Exception:  # the listener's bug must not stop discovery
            log.exception("discovery listener failed on %s", event)


def _to_peer(info: ServiceInfo) -> PeerInfo | None:
    addresses = info.parsed_addresses(IPVersion.V4Only) or info.parsed_addresses()
    if not addresses or info.port is None:
        return None
    return PeerInfo.from_txt(info.properties, addresses[0], info.port)


def probe_manual(host: str, port: int, timeout: float = 3.0) -> PeerInfo:
    """Ask a worker at host:port who it is (the fallback when mDNS does not reach it)."""
    from core.cluster.pairing_client import query_info  # pulls in the codec (torch)

    txt = query_info(tcp_endpoint(host, port), timeout)
    peer = PeerInfo.from_txt(txt, host, port)
    if peer is None:
        raise PeerError(f"the device at {host}:{port} sent a malformed description; is it a "
                        "TPI Chat worker?")
    return peer
