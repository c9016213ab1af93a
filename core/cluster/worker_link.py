"""The master's link to one paired worker's CURVE control port: requests and heartbeat.

Two DEALERs, so a long shard transfer never delays a heartbeat: `request`/`ship` use the
command socket (one caller at a time), a background thread pings on its own socket
every second and keeps the round-trip time (last RTT_HISTORY values) and the worker's
report on its ranks. No pong for DEAD_AFTER_S marks the link dead and calls `on_dead`;
the pings go on, and the first pong after that clears it and calls `on_back`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.cluster.ship_sender import ShipProgress, ship_rank
from core.cluster.worker_protocol import TO_MASTER
from core.comm.codec import Message
from core.comm.control import BadMessage, ControlClient
from core.comm.curve import CurveClientConfig, KeyPair
from core.errors import PeerError, ProtocolError

PING_EVERY_S = 1.0
DEAD_AFTER_S = 2.5
RTT_HISTORY = 60
MAX_WORDS = 300  # characters of a worker's log line we keep
NOTE_EVERY_S = 10.0  # unexpected heartbeat failures: at most one log line this often

log = logging.getLogger(__name__)


class Refused(ProtocolError):
    """The worker said no to a request; `reason` is its own words."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class WorkerLink:
    """Commands and liveness of one worker, as seen from the master."""

    def __init__(self, name: str, endpoint: str, worker_key: str, identity: KeyPair,
                 on_dead: Callable[[WorkerLink], None] | None = None,
                 on_back: Callable[[WorkerLink], None] | None = None,
                 dead: str | None = None):
        self.name, self.endpoint, self.worker_key = name, endpoint, worker_key
        self._curve = CurveClientConfig(identity, worker_key)
        self._cmd = ControlClient(endpoint, ops=TO_MASTER, curve=self._curve)
        self._lock = threading.Lock()
        self.on_dead = on_dead
        self.on_back = on_back
        self.rtt_ms: deque[float] = deque(maxlen=RTT_HISTORY)
        self.ranks: dict[str, int] = {}
        self.ranks_asked_at = 0.0  # when the ping behind `ranks` was sent
        self.last_words: dict[str, str] = {}  # "<rank>": last log line of a failed rank
        self.last_pong = time.monotonic()
        self.dead: str | None = dead  # why it is not answering; None while it is
        self._noted = -NOTE_EVERY_S  # when an unexpected heartbeat failure was last logged
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{name}",
                                        daemon=True)
        self._thread.start()

    # -- commands ------------------------------------------------------------------

    def request(self, op: str, meta: dict[str, Any], expect: set[str],
                timeout: float = 10.0, tensors: tuple = ()) -> Message:
        with self._lock:
            self._cmd.send(op, meta, tensors)
            return self._answer(op, expect, time.monotonic() + timeout, timeout)

    def _answer(self, op: str, expect: set[str], deadline: float, timeout: float) -> Message:
        """The first answer to `op` whose kind is in `expect` (the caller holds the lock)."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self._cmd.recv(timeout=left)
            except BadMessage as e:
                raise ProtocolError(f"worker '{self.name}' sent a malformed answer: {e}"
                                    ) from None
            if msg is None:
                break
            if msg.op == "refused":
                raise Refused(f"worker '{self.name}' refused {op}: "
                              f"{msg.meta.get('message')}", str(msg.meta.get("message")))
            if msg.op in expect:
                return msg
        raise PeerError(f"worker '{self.name}' did not answer {op} within {timeout:g} s; "
                        "is it still running and paired with this device?")

    def ship(self, rank_dir: Path, split_id: str,
             progress: Callable[[ShipProgress], None] | None = None) -> None:
        with self._lock:
            ship_rank(lambda op, meta, t: self._cmd.send(op, meta, t),
                      lambda timeout: self._cmd.recv(timeout=timeout), rank_dir, split_id,
                      progress)

    # -- health --------------------------------------------------------------------

    def _beat(self) -> None:
        hb = ControlClient(self.endpoint, ops=TO_MASTER, curve=self._curve)
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    hb.send("ping", {"t": t0})
                    got = self._pong(hb, t0, t0 + PING_EVERY_S)
                except (PeerError, BadMessage):
                    got = False
                except Exception as e:  # never die silently: a dead heartbeat would
                    self._note(e)  # leave the link "alive" for good
                    got = False
                if got:
                    self.rtt_ms.append((time.monotonic() - t0) * 1000)
                    self.last_pong = time.monotonic()
                    if self.dead is not None:  # it is back (restarted, or the link healed)
                        self.dead = None
                        if self.on_back is not None:
                            self._call(self.on_back)
                elif self.dead is None and time.monotonic() - self.last_pong > DEAD_AFTER_S:
                    self._mark_dead(f"no answer for {DEAD_AFTER_S:g} s")
                self._stop.wait(max(0.0, t0 + PING_EVERY_S - time.monotonic()))
        finally:
            hb.close()

    def _note(self, e: Exception) -> None:
        """Log an unexpected heartbeat failure: one line, at most every NOTE_EVERY_S."""
        now = time.monotonic()
        if now - self._noted >= NOTE_EVERY_S:
            self._noted = now
            log.warning("heartbeat to worker '%s' failed: %s: %s", self.name,
                        type(e).__name__, str(e)[:200], exc_info=True)

    def _pong(self, hb: ControlClient, t0: float, deadline: float) -> bool:
        while (left := deadline - time.monotonic()) > 0:
            msg = hb.recv(timeout=left)
            if msg is None:
                return False
            if msg.op == "pong" and msg.meta.get("t") == t0:
                ranks = msg.meta.get("ranks")
                if isinstance(ranks, dict):
                    self.ranks = {str(k): int(v) for k, v in list(ranks.items())[:256]
                                  if isinstance(v, int)}
                    self.ranks_asked_at = t0
                why = msg.meta.get("why")
                if isinstance(why, dict):  # the worker's own log line of a failed rank
                    self.last_words = {str(k)[:8]: v[:MAX_WORDS] for k, v in
                                       list(why.items())[:16] if isinstance(v, str)}
                return True
        return False

    def _mark_dead(self, why: str) -> None:
        self.dead = why
        if self.on_dead is not None:
            self._call(self.on_dead)

    def _call(self, listener: Callable[[WorkerLink], None]) -> None:
        try:
            listener(self)
        except Exception as e:  # the listener's bug must not stop the heartbeat
            self._note(e)

    def probe(self, timeout: float = 1.0) -> bool:
        """Ask now, on a fresh socket, whether the worker answers; marks the link dead if not."""
        c = ControlClient(self.endpoint, ops=TO_MASTER, curve=self._curve)
        try:
            t0 = time.monotonic()
            c.send("ping", {"t": t0})
            ok = self._pong(c, t0, t0 + timeout)
        except (PeerError, BadMessage):
            ok = False
        except Exception as e:  # as in the heartbeat: a failed probe is a silent worker
            self._note(e)
            ok = False
        finally:
            c.close()
        if not ok and self.dead is None:
            self.dead = f"no answer within {timeout:g} s"
        return ok

    @property
    def last_rtt_ms(self) -> float | None:
        return self.rtt_ms[-1] if self.rtt_ms else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        self._cmd.close()


def request_all(links: Sequence[WorkerLink], op: str, meta: dict[str, Any], expect: set[str],
                timeout: float = 10.0, tensors: tuple = ()) -> list[Message]:
    """The same request sent to every link before any answer is awaited, then every answer
    (in `links` order): a star of messages as rank 0 sends one, for the planner's group
    probe (core/cluster/speeds.py)."""
    with contextlib.ExitStack() as held:
        for link in sorted(links, key=id):  # one order for every caller: no lock cycles
            held.enter_context(link._lock)
        for link in links:
            link._cmd.send(op, meta, tensors)
        deadline = time.monotonic() + timeout
        return [link._answer(op, expect, deadline, timeout) for link in links]
