"""Fuzzing a port of a real process: the driver and the worker's CURVE control port.

A target is anything with `start(frames)` / `finish() -> answered?`, `alive()`,
`usage()` and a name: `fuzz_port` warms it up with the valid seeds, measures RSS / fds /
threads, sends `n` mutated messages (Hypothesis), waits for each one's answer (no answer:
the process must still run and answer a fresh request), and at the end checks that it
still answers and grew by at most the given bounds. To fuzz another port (say, the
pairing port), write a target for it and call `fuzz_port` with its seeds; the mutations
and checks are the same.

Speed (a million frames is the bar): each Hypothesis example draws up to PER_EXAMPLE
messages, so the engine's per-example bookkeeping is paid once for many frames, and the
next message is drawn while the process answers the last one (one message in flight at
a time, so each answer still belongs to exactly one message).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Protocol

import msgpack
import psutil
import zmq
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from core.cluster.worker_protocol import TO_MASTER
from core.comm.codec import decode, encode
from tests.fixtures.paired_worker import PairedWorker, Usage
from tests.fuzz.mutations import Seed, mutated
from tests.fuzz.report import Tally


class PortTarget(Protocol):
    name: str

    def start(self, frames: list[bytes], raw: bool = False) -> None:
        """Send one message without waiting for its answer. `raw`: the frames are whole
        wire bytes (a seed named raw:...), for a framed protocol."""

    def finish(self) -> str | None:
        """The kind of answer ("refused", "pong", ...) to the message started last, or
        None when none came."""

    def alive(self) -> bool:
        """The process runs and answers a fresh, valid request."""

    def usage(self) -> Usage: ...

    def console(self) -> list[str]:
        """What the process printed (for failure messages)."""


@dataclass(frozen=True)
class Bounds:
    """How much a process may grow over a fuzz run (after warming up)."""

    rss_mb: float = 48.0
    fds: int = 4
    threads: int = 2


def _is_unpair(frames: list[bytes]) -> bool:
    """A mutation that happens to be a valid `unpair` would end our own pairing."""
    if not frames or b"unpair" not in frames[0]:  # msgpack keeps a str's bytes as they are
        return False
    try:
        h = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    except Exception:
        return False
    return isinstance(h, dict) and h.get("op") == "unpair"


CHUNK = int(os.environ.get("TPI_FUZZ_CHUNK", 20_000))  # frames per Hypothesis run
PER_EXAMPLE = 16  # messages per Hypothesis example


def _raw(seed_name: str) -> bool:
    return seed_name.startswith("raw:")


def _settle(target: PortTarget) -> Usage:
    time.sleep(0.5)
    return target.usage()


def _send(target: PortTarget, frames: list[bytes], raw: bool) -> str | None:
    target.start(frames, raw)
    return target.finish()


def fuzz_port(target: PortTarget, seeds: list[Seed], n: int, tally: Tally,
              bounds: Bounds = Bounds(), warm: int = 300) -> None:
    for i in range(warm):  # allocator arenas, caches and lazy imports settle first
        seed = seeds[i % len(seeds)]
        assert _send(target, list(seed.frames), _raw(seed.name)) is not None, seed.name
    before = _settle(target)
    start = time.monotonic()
    progress = _Progress(target, before, start)

    strategy = mutated(seeds).filter(lambda c: not _is_unpair(c[1]))
    done = tally.frames

    died: list[str] = []  # the first death seen (Hypothesis then replays the example)

    def check(name: str, frames: list[bytes]) -> str | None:
        """Wait for the answer to the message in flight (a mutated `name`); what is
        wrong, or None."""
        answer = target.finish()
        if answer is None:  # no answer: only fine if the process is still serving
            if not target.alive():
                if not died:
                    died.append(f"{target.name} died on frame {tally.frames:,}, a mutated "
                                f"{name} ({frames!r:.2000}); it said: "
                                f"{target.console()[-15:]}")
                return died[0]
            tally.refused += 1
        elif answer == "refused" or answer.startswith("ship_error"):
            tally.refused += 1
        else:
            tally.accepted += 1
        progress.tick(tally)
        return None

    def some(data):
        # Every example makes all PER_EXAMPLE draws, whatever happens: Hypothesis replays
        # a failing example and requires the same draws from the same choices. Past the
        # frame budget or a failure, drawn messages are not sent.
        pending = None  # the message in flight
        failure = None
        try:
            for _ in range(PER_EXAMPLE):
                name, frames = data.draw(strategy)  # while the process answers `pending`
                if pending is not None:
                    pending, last = None, pending
                    failure = check(*last)
                if failure is None and tally.frames - done < n:
                    target.start(frames, _raw(name))
                    tally.frames += 1
                    pending = name, frames
        finally:  # also when a draw ran out of room: no answer is left for the next one
            if pending is not None:
                failure = check(*pending)
            if failure is not None:
                raise AssertionError(failure)

    deadline = float(os.environ.get("TPI_FUZZ_DEADLINE", "inf"))  # epoch seconds
    try:
        # In chunks, so a long run can stop at TPI_FUZZ_DEADLINE and still do the final
        # checks (each chunk a fresh Hypothesis run: random seeds in the fuzz profile).
        # No shrinking: what fails is a process that died or went silent, and replaying
        # smaller examples against it only fails again; the failing example is reported.
        while tally.frames - done < n and time.time() < deadline:
            k = min(CHUNK, n - (tally.frames - done))
            settings(max_examples=-(-k // PER_EXAMPLE),
                     phases=[Phase.explicit, Phase.reuse, Phase.generate])(
                given(st.data())(some))()  # a fresh test per chunk
    finally:
        tally.seconds += time.monotonic() - start
    assert target.alive(), f"{target.name} does not answer; it said: {target.console()[-15:]}"
    after = _settle(target)
    tally.rss_mb = round(after.rss_mb - before.rss_mb, 1)
    tally.fds = after.fds - before.fds
    tally.threads = after.threads - before.threads
    assert tally.rss_mb <= bounds.rss_mb, (before, after)
    assert tally.fds <= bounds.fds, (before, after)
    assert tally.threads <= bounds.threads, (before, after)


class _Progress:
    """With TPI_FUZZ_PROGRESS=path, a JSON line every 10,000 frames (frames, seconds,
    growth so far): a long run that is stopped early still says how far it got."""

    EVERY = 10_000

    def __init__(self, target: PortTarget, before: Usage, start: float):
        self.path = os.environ.get("TPI_FUZZ_PROGRESS")
        self.target, self.before, self.start = target, before, start

    def tick(self, tally: Tally) -> None:
        if not self.path or tally.frames % self.EVERY:
            return
        now = self.target.usage()
        line = {"target": tally.target, "frames": tally.frames,
                "seconds": round(time.monotonic() - self.start, 1),
                "refused": tally.refused, "accepted": tally.accepted,
                "rss_mb": round(now.rss_mb - self.before.rss_mb, 1),
                "fds": now.fds - self.before.fds,
                "threads": now.threads - self.before.threads,
                "load": os.getloadavg()[0]}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


SLICE_S = 0.2  # how often a wait for an answer looks at the worker


class WorkerControlTarget:
    """`tpi-chat worker`'s CURVE control port, as its paired master (PairedWorker).

    Waits for answers count only the time the worker could run: a long run is paused
    with SIGSTOP now and then (to benchmark beside it), and a worker stopped for
    minutes is not a worker that went silent. Time the fuzzer itself was stopped
    does not count either (one slice at most per wake-up)."""

    def __init__(self, worker: PairedWorker, reply_timeout: float = 5.0):
        self.name = "tpi-chat worker control port"
        self.worker = worker
        self.timeout = reply_timeout
        self.sock = worker.connect()
        self.silent = 0  # messages that got no answer
        self._proc = psutil.Process(worker.proc.proc.pid)

    def _stopped(self) -> bool:
        try:
            return self._proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
        except psutil.Error:
            return False

    def _wait(self, sock: zmq.Socket) -> bool:
        """Whether an answer is waiting on `sock` within `timeout` s of the worker's
        running time (False at once if the worker exited)."""
        left = self.timeout
        while True:
            t0 = time.monotonic()
            if sock.poll(int(SLICE_S * 1000)):
                return True
            if not self.worker.alive():
                return False
            if not self._stopped():
                left -= min(time.monotonic() - t0, SLICE_S)
                if left <= 0:
                    return False

    def start(self, frames: list[bytes], raw: bool = False) -> None:
        self.sock.send_multipart(frames)

    def finish(self) -> str | None:
        if not self._wait(self.sock):
            # Every message is answered (a malformed one with `refused`), so the answer
            # was lost: libzmq dropped the connection (over its size cap, or its
            # heartbeat timed out across a pause). Start afresh; alive() says the rest.
            self.silent += 1
            self.sock.close()
            self.sock = self.worker.connect()
            return None
        reply = self.sock.recv_multipart()
        try:
            head = msgpack.unpackb(reply[0], raw=False)
            return str(head.get("op"))
        except Exception:
            return "undecodable"

    def ping(self) -> bool:
        """A valid ping on a fresh connection is answered with its pong."""
        sock = self.worker.connect()
        try:
            sock.send_multipart(encode("ping", {"t": 7}))
            if not self._wait(sock):
                return False
            msg = decode(sock.recv_multipart(copy=False), TO_MASTER)
            return msg.op == "pong" and msg.meta.get("t") == 7
        finally:
            sock.close()

    def alive(self) -> bool:
        # twice: a connection that a pause cut (heartbeats) can lose one answer
        return self.worker.alive() and (self.ping() or self.ping())

    def usage(self) -> Usage:
        return self.worker.usage()

    def console(self) -> list[str]:
        return self.worker.proc.lines

    def close(self) -> None:
        self.sock.close()
