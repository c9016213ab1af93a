"""`tpi-chat worker`'s pairing port as a fuzz target (see targets.fuzz_port): each message
on a fresh TCP connection, its frames length-prefixed (a `raw:` seed's bytes go as they
are), then our side shut for writing so a cut frame is not left waiting for the idle
timeout; the answer is the op of the first frame back. Connections come from addresses
rotated over 127.1.0.0/16, as many strangers would, so the per-address rates refuse
some but not all (the overall rate of pairing attempts still turns most hellos away:
that is the port as it faces a stranger)."""

from __future__ import annotations

import socket

import msgpack
import psutil

from core.cluster.pairing_client import query_info
from core.cluster.pairing_wire import LENGTH
from tests.fixtures.paired_worker import Usage
from tests.fixtures.worker_process import WorkerProcess


class PairingPortTarget:
    def __init__(self, worker: WorkerProcess, reply_timeout: float = 3.0):
        self.name = "tpi-chat worker pairing port (TCP)"
        self.worker = worker
        self.timeout = reply_timeout
        self.n = 0

    def _source(self) -> str:
        self.n += 1
        return f"127.1.{(self.n // 250) % 250 + 1}.{self.n % 250 + 1}"

    def send(self, frames: list[bytes], raw: bool = False) -> str | None:
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
        try:
            return (self.worker.proc.poll() is None
                    and query_info(self.worker.endpoint)["name"] == self.worker.name)
        except Exception:
            return False

    def usage(self) -> Usage:
        p = psutil.Process(self.worker.proc.pid)
        return Usage(p.memory_info().rss / 2**20, p.num_fds(), p.num_threads())

    def console(self) -> list[str]:
        return self.worker.lines
