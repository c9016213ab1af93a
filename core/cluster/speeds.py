"""The master's side of measuring: this computer's speeds (cached), a worker's (asked on
its control port), and a link's round trips and bandwidth (echoes on that port).

The link probe rides the worker's CURVE control port: ZeroMQ + CURVE over TCP on the same
route as the device's data-plane link to rank 0 (no ICMP). Link emulation, where a run
asks for it, sits in the data plane's sends and is priced by the cost model itself.

A link's round trips are the median of a burst of back-to-back echoes, as decode sends
them, each burst after a few echoes left out: the first ones after a pause take longer
(~1 ms against ~0.45 on the test VM: the machines wake up), a cost decode pays only after
waits, where the cost model prices it from the device's own curve. Each link gets a few
bursts, in turns with the other links' and apart in time, and keeps its lowest: on the
2-core test VM, one burst in three to five read 0.8-1.6 ms against ~0.45 usual, for tens
of milliseconds to about a second, while the decode that followed ran at its usual speed.

A group of two or more workers is also probed at once (`group_extra_ms`): rank 0 handles
their messages one after another, and devices that share cores (emulated devices on one
small machine) answer one after another, so a star round trip costs more than the slowest
of its links alone. On the 2-core test machine, with two devices on one core: 0.65 ms
together against 0.37 ms each alone, where an allreduce measured ~0.34 ms more than
the per-link model said.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time

import torch

from core.cluster.measure_device import measure
from core.cluster.measures import FORMATS, PROBE_BYTES, DeviceSpeed, LinkSpeed
from core.cluster.worker_link import WorkerLink, request_all
from core.cluster.worker_measure import STALE_S
from core.errors import PeerError, ProtocolError, TpiError
from core.model.cache import cache_dir

log = logging.getLogger(__name__)
CACHE_FILE = "device_speed.json"
RTT_SAMPLES = 20  # echoes a burst
RTT_BURSTS = 3
WARM_ECHOES = 5  # before each burst, not counted
BURST_PAUSE_S = 0.1  # between one link's bursts (the other links' bursts run in it)
BIG_BYTES = 512 * 1024
BIG_SAMPLES = 3
GROUP_ROUNDS = 20


def local_speed(fresh: bool = False, formats: tuple[str, ...] = FORMATS,
                wait: bool = True) -> DeviceSpeed:
    """This computer's speeds: cached in the cache folder, measured when missing, older
    than an hour, lacking one of `formats`, or `fresh` asked. Without `wait`, the cached
    numbers (or cautious defaults) at once and nothing measured: a measurement now would
    compete with the ranks starting."""
    path = cache_dir() / CACHE_FILE
    try:
        got: DeviceSpeed | None = DeviceSpeed.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        got = None
    due = (fresh or got is None or time.time() - got.measured_at >= STALE_S
           or not set(formats) <= set(got.read_gbps))
    if not due:
        return got
    if not wait:
        return got or DeviceSpeed.from_dict({})
    speed = measure(cache_dir() / "shards", formats)
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(speed.to_dict()))
    tmp.replace(path)
    return speed


def worker_speed(link: WorkerLink, fresh: bool = False, formats: tuple[str, ...] = FORMATS,
                 timeout: float = 150.0, wait: bool = True) -> DeviceSpeed | None:
    """A worker's speeds (None if it cannot say in `timeout`): its cached numbers, or
    the ones it measures now when it has none (or `fresh` asked). Without `wait`, what it
    has cached at once (None if nothing), and it starts no measurement."""
    deadline = time.monotonic() + timeout
    asked_fresh = fresh
    while time.monotonic() < deadline:
        try:
            msg = link.request("measure", {"fresh": asked_fresh, "formats": list(formats),
                                           "start": wait}, {"measured"}, timeout=5.0)
        except (PeerError, ProtocolError) as e:
            log.warning("'%s' did not say its speeds: %s", link.name, e)
            return None
        asked_fresh = False  # asked once; then wait for that measurement
        device, pending = msg.meta.get("device"), msg.meta.get("pending") is True
        if not wait:
            return DeviceSpeed.from_dict(device) if device is not None else None
        if device is not None and not pending:
            got = DeviceSpeed.from_dict(device)
            if set(formats) <= set(got.read_gbps) or not fresh:
                return got
        if not pending and device is None:
            return None  # it tried and failed (its `error` is in its log)
        time.sleep(0.25)
    return None


def link_speeds(links: list[WorkerLink], nbytes: int = PROBE_BYTES,
                bursts: int = RTT_BURSTS) -> list[LinkSpeed]:
    """Each link's round trips of `nbytes` echoes: its burst with the lowest median out of
    `bursts`, taken one link at a time in turns; then its bandwidth from a few big echoes.
    A link is asked no more once an echo fails (each waits up to 5 s: a device that stops
    answering, or a hostile one, must not hold the start for minutes) and keeps its best
    burst before that; one none of whose echoes came back has no round trips."""
    small = torch.zeros(nbytes, dtype=torch.uint8)
    best: list[list[float]] = [[] for _ in links]
    failed: set[int] = set()
    for turn in range(bursts):
        started = time.monotonic()
        for i, link in enumerate(links):
            got = _burst(link, small) if i not in failed else None
            if got is None:
                failed.add(i)
            elif got and (not best[i] or statistics.median(got) < statistics.median(best[i])):
                best[i] = got
        if turn + 1 < bursts:
            time.sleep(max(0.0, BURST_PAUSE_S - (time.monotonic() - started)))
    # a link that failed keeps what it answered before, and is asked no big echoes
    return [_with_bandwidth(link, rtts, nbytes) if i not in failed else LinkSpeed(tuple(rtts))
            for i, (link, rtts) in enumerate(zip(links, best, strict=True))]


def _burst(link: WorkerLink, small: torch.Tensor) -> list[float] | None:
    """RTT_SAMPLES back-to-back echoes (ms) after WARM_ECHOES left out; None at the first
    that fails or comes back wrong."""
    rtts = []
    for n in range(WARM_ECHOES + RTT_SAMPLES):
        got = _echo(link, small)
        if got is None:
            return None
        if n >= WARM_ECHOES:
            rtts.append(got)
    return rtts


def _with_bandwidth(link: WorkerLink, rtts: list[float], nbytes: int) -> LinkSpeed:
    if not rtts:
        return LinkSpeed()
    big = torch.zeros(BIG_BYTES, dtype=torch.uint8)
    bigs = [r for r in (_echo(link, big) for _ in range(BIG_SAMPLES)) if r is not None]
    mbps = None
    if bigs:
        extra_ms = max(1e-3, min(bigs) - min(rtts))
        mbps = 2 * (BIG_BYTES - nbytes) * 8 / (extra_ms * 1e3)
    return LinkSpeed(tuple(rtts), mbps)


def _echo(link: WorkerLink, t: torch.Tensor) -> float | None:
    """One echo's round trip (ms); None if it failed or came back wrong."""
    return _echo_all([link], t)


def group_extra_ms(links: list[WorkerLink], nbytes: int = PROBE_BYTES,
                   rounds: int = GROUP_ROUNDS) -> float:
    """What answering together adds to a round trip over `links` (ms, median): each round
    echoes on every link alone, then on all at once, and takes the difference between the
    together round trip and the slowest alone, so that drift between rounds cancels. It
    stops at the first echo that fails (each waits up to 5 s, see link_speeds)."""
    small = torch.zeros(nbytes, dtype=torch.uint8)
    extras = []
    for _ in range(rounds):
        alone = [_echo(link, small) for link in links]
        if None in alone or (together := _echo_all(links, small)) is None:
            break
        extras.append(together - max(alone))
    return max(0.0, statistics.median(extras)) if extras else 0.0


def _echo_all(links: list[WorkerLink], t: torch.Tensor) -> float | None:
    """One echo on every link at once: the round trip until the last answer (ms); None if
    one failed or came back wrong."""
    t0 = time.perf_counter()
    try:
        msgs = request_all(links, "echo", {"t": t0}, {"echo"}, timeout=5.0, tensors=(t,))
    except (PeerError, ProtocolError, TpiError):
        return None
    ms = (time.perf_counter() - t0) * 1e3
    ok = all(m.meta.get("t") == t0 and len(m.tensors) == 1 and m.tensors[0].numel() == t.numel()
             for m in msgs)
    return ms if ok else None
