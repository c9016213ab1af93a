"""`tpi-chat worker`'s pairing port as a fuzz target (see targets.fuzz_port): each message
on a fresh TCP connection, its frames length-prefixed (a `raw:` seed's bytes go as they
are), then our side shut for writing so a cut frame is not left waiting for the idle
timeout; the answer is the op of the first frame back.

Connections come from a pool of addresses in 127.1.0.0/16, as many strangers would. The
pool was made smaller than the addresses the worker remembers (Limits.max_addresses)
when a full table turned every new address away `busy` (half of the frames, with a new
address per frame); the table now forgets its least recently seen address instead, and
the pool size stands for its other reason: each address comes back every POOL frames,
under its rate of new connections at the rates reached here, so frames reach the decoders;
the overall rate of pairing attempts still turns most hellos away (that is the port as
it faces a stranger). Pairing is kept open: P is pressed again after a window closed
(three wrong codes lock it, and it lasts 5 minutes), so the hellos that pass the
rates reach the SPAKE2 exchange and the confirm for the whole run, not its first
minutes."""

from __future__ import annotations

import socket
import time

import msgpack
import psutil

from core.cluster.pairing import OPS_TO_MASTER
from core.cluster.pairing_wire import DEFAULT_LIMITS, LENGTH, FrameSocket, pack, unpack
from tests.fixtures.paired_worker import Usage
from tests.fixtures.worker_process import WorkerProcess

# Addresses in the pool: 3072 of the 4096 the worker remembers (room left for
# alive()'s). At 1,000 frames/s each comes back 20 times a minute, under
# Limits.conns_per_addr (30).
POOL = DEFAULT_LIMITS.max_addresses * 3 // 4
ALIVE_POOL = 250  # addresses alive() asks from, 127.2.0.1-250
REOPEN_EVERY = 500  # frames between looks at whether pairing is still open


class PairingPortTarget:
    def __init__(self, worker: WorkerProcess, reply_timeout: float = 3.0):
        self.name = "tpi-chat worker pairing port (TCP)"
        self.worker = worker
        self.timeout = reply_timeout
        self.n = 0
        self.checks = 0
        self._next: tuple[list[bytes], bool] = ([], False)

    def _source(self) -> str:
        self.n += 1
        i = self.n % POOL
        return f"127.1.{i // 250 + 1}.{i % 250 + 1}"

    def _keep_pairing_open(self) -> None:
        """Press P (without waiting for its line) when the console last said closed."""
        if self.n % REOPEN_EVERY == 0 and not self.worker.pairing_open():
            self.worker.press("p")

    def start(self, frames: list[bytes], raw: bool = False) -> None:
        self._next = (frames, raw)  # each message is a connection of its own: sent whole

    def finish(self) -> str | None:
        return self.send(*self._next)

    def send(self, frames: list[bytes], raw: bool = False) -> str | None:
        self._keep_pairing_open()
        data = b"".join(frames) if raw else b"".join(LENGTH.pack(len(f)) + f for f in frames)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.bind((self._source(), 0))
            s.connect((self.worker.host, self.worker.port))
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # refused and closed before all was sent: read what it said
            got = b""
            while chunk := s.recv(8192):
                got += chunk
        except OSError:
            return None
        finally:
            s.close()
        if len(got) < 4:
            return None
        try:
            head = msgpack.unpackb(got[4:4 + LENGTH.unpack(got[:4])[0]], raw=False)
            return str(head.get("op"))
        except Exception:
            return "undecodable"

    def alive(self) -> bool:
        """It runs and answers `info` with its name, asked from an address of a range
        of its own: asked from 127.0.0.1 every time, as query_info does, these checks
        (one per unanswered frame, over 30 a minute at 300 frames/s) passed that
        address's rate of new connections and were refused."""
        if self.worker.proc.poll() is not None:
            return False
        self.checks += 1
        try:
            with socket.create_connection(
                    (self.worker.host, self.worker.port), self.timeout,
                    source_address=(f"127.2.0.{self.checks % ALIVE_POOL + 1}", 0)) as s:
                frames = FrameSocket(s, time.monotonic() + self.timeout)
                frames.send(pack("info"))
                msg = unpack(frames.recv(), OPS_TO_MASTER)
            return msg.op == "info" and msg.meta["txt"]["name"] == self.worker.name
        except Exception:
            return False

    def usage(self) -> Usage:
        p = psutil.Process(self.worker.proc.pid)
        return Usage(p.memory_info().rss / 2**20, p.num_fds(), p.num_threads())

    def console(self) -> list[str]:
        return self.worker.lines
