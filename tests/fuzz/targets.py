"""Fuzzing a port of a real process: the driver and the worker's CURVE control port.

A target is anything with `send(frames) -> answered?`, `alive()`, `usage()` and a name:
`fuzz_port` warms it up with the valid seeds, measures RSS / fds / threads, sends
`n` mutated messages (Hypothesis), checks after each one that the process still runs,
and at the end that it still answers and grew by at most the given bounds. To fuzz
another port (say, the pairing port), write a target for it and call `fuzz_port` with
its seeds; the mutations and checks are the same.
"""

from __future__ import annotations

import json
import os
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

    def send(self, frames: list[bytes], raw: bool = False) -> str | None:
        """Send one message; the kind of answer ("refused", "pong", ...) or None. `raw`:
        the frames are whole wire bytes (a seed named raw:...), for a framed protocol."""

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


CHUNK = int(os.environ.get("TPI_FUZZ_CHUNK", 20_000))  # examples per Hypothesis run


def _raw(seed_name: str) -> bool:
    return seed_name.startswith("raw:")


def _settle(target: PortTarget) -> Usage:
    time.sleep(0.5)
    return target.usage()


def fuzz_port(target: PortTarget, seeds: list[Seed], n: int, tally: Tally,
              bounds: Bounds = Bounds(), warm: int = 300) -> None:
    for i in range(warm):  # allocator arenas, caches and lazy imports settle first
        seed = seeds[i % len(seeds)]
        assert target.send(list(seed.frames), _raw(seed.name)) is not None, seed.name
    before = _settle(target)
    start = time.monotonic()
    progress = _Progress(target, before, start)

    strategy = mutated(seeds).filter(lambda c: not _is_unpair(c[1]))

    def one(case):
        name, frames = case
        tally.frames += 1
        answer = target.send(frames, _raw(name))
        if answer is None:  # no answer: only fine if the process is still serving
            assert target.alive(), (f"{target.name} died on a mutated {name}; it said: "
                                    f"{target.console()[-15:]}")
            tally.refused += 1
        elif answer == "refused" or answer.startswith("ship_error"):
            tally.refused += 1
        else:
            tally.accepted += 1
        progress.tick(tally)

    deadline = float(os.environ.get("TPI_FUZZ_DEADLINE", "inf"))  # epoch seconds
    done = tally.frames
    try:
        # In chunks, so a long run can stop at TPI_FUZZ_DEADLINE and still do the final
        # checks (each chunk a fresh Hypothesis run: random seeds in the fuzz profile).
        while tally.frames - done < n and time.time() < deadline:
            k = min(CHUNK, n - (tally.frames - done))
            settings(max_examples=k)(given(strategy)(one))()  # a fresh test per chunk
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


class WorkerControlTarget:
    """`tpi-chat worker`'s CURVE control port, as its paired master (PairedWorker)."""

    def __init__(self, worker: PairedWorker, reply_timeout: float = 5.0):
        self.name = "tpi-chat worker control port"
        self.worker = worker
        self.timeout_ms = int(reply_timeout * 1000)
        self.sock = worker.connect()
        self.silent = 0

    def send(self, frames: list[bytes], raw: bool = False) -> str | None:
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
