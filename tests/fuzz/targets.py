"""Fuzzing a port of a real process: the driver and the worker's CURVE control port.

A target is anything with `send(frames) -> answered?`, `alive()`, `usage()` and a name:
`fuzz_port` warms it up with the valid seeds, measures RSS / fds / threads, sends
`n` mutated messages (Hypothesis), checks after each one that the process still runs,
and at the end that it still answers and grew by at most the given bounds. To fuzz
another port (say, the pairing port), write a target for it and call `fuzz_port` with
its seeds; the mutations and checks are the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import msgpack
from hypothesis import given, settings

from tests.fixtures.paired_worker import PairedWorker, Usage
from tests.fuzz.mutations import Seed, mutated
from tests.fuzz.report import Tally


class PortTarget(Protocol):
    name: str

    def send(self, frames: list[bytes]) -> str | None:
        """Send one message; the kind of answer ("refused", "pong", ...) or None."""

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
    try:
        h = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    except Exception:
        return False
    return isinstance(h, dict) and h.get("op") == "unpair"


def _settle(target: PortTarget) -> Usage:
    time.sleep(0.5)
    return target.usage()


def fuzz_port(target: PortTarget, seeds: list[Seed], n: int, tally: Tally,
              bounds: Bounds = Bounds(), warm: int = 300) -> None:
    for i in range(warm):  # allocator arenas, caches and lazy imports settle first
        assert target.send(list(seeds[i % len(seeds)].frames)) is not None
    before = _settle(target)
    start = time.monotonic()

    @settings(max_examples=n)
    @given(mutated(seeds).filter(lambda c: not _is_unpair(c[1])))
    def run(case):
        name, frames = case
        tally.frames += 1
        answer = target.send(frames)
        if answer is None:  # no answer: only fine if the process is still serving
            assert target.alive(), (f"{target.name} died on a mutated {name}; it said: "
                                    f"{target.console()[-15:]}")
            tally.refused += 1
        elif answer == "refused" or answer.startswith("ship_error"):
            tally.refused += 1
        else:
            tally.accepted += 1

    try:
        run()
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


class WorkerControlTarget:
    """`tpi-chat worker`'s CURVE control port, as its paired master (PairedWorker)."""

    def __init__(self, worker: PairedWorker, reply_timeout: float = 5.0):
        self.name = "tpi-chat worker control port"
        self.worker = worker
        self.timeout_ms = int(reply_timeout * 1000)
        self.sock = worker.connect()
        self.silent = 0

    def send(self, frames: list[bytes]) -> str | None:
        self.sock.send_multipart(frames)
        if not self.sock.poll(self.timeout_ms):
            self.silent += 1  # libzmq dropped it (over its size cap): start afresh
            self.sock.close()
            self.sock = self.worker.connect()
            return None
        reply = self.sock.recv_multipart()
        try:
            head = msgpack.unpackb(reply[0], raw=False)
            return str(head.get("op"))
        except Exception:
            return "undecodable"

    def alive(self) -> bool:
        return self.worker.alive() and self.worker.ping()

    def usage(self) -> Usage:
        return self.worker.usage()

    def console(self) -> list[str]:
        return self.worker.proc.lines

    def close(self) -> None:
        self.sock.close()
