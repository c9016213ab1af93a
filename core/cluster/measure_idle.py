"""What waiting costs this device: a half-layer that resumes after its rank sat idle in
an allreduce costs more than one that runs straight after the last.

While a rank waits on a link, its caches cool (other processes, the kernel, on a cloud VM
other tenants) and its blocked threads must be woken. On the 2-core test machine (a VM),
after 2 ms of waiting: the engine's fixed half-layer cost went 0.06 -> 0.24 ms, a 0.64 MB
q4_1 block read 0.09 -> 0.15 ms, and it does so even when the wait spins. With links of
milliseconds every one of a decode step's allreduces pays it: 2 devices at 2 ms per send
decoded 25% slower than a cost model that priced waiting at nothing (`make bench`).

So each device measures, for a few idle gaps, the extra time of one resume: one half of
the sliver layer (measure_workloads.sliver_layers) and one block read after sleeping the
gap, then an allreduce's two messages as the link emulation sends them: a data-plane
frame on loopback TCP sent after waiting the gap and answered after waiting it again,
each end on its own core where the device has two (a wake on another core is what a
packet from another device costs); each less the same run again at once. The cost
model (cost_model.py) reads the curve at the time an allreduce leaves the ranks waiting.
Runs in the measurement child, ~1 s.
"""

from __future__ import annotations

import itertools
import os
import queue
import statistics
import threading
import time

from core.comm.linkemu import precise_sleep

GAPS_MS = (0.5, 1.0, 2.0, 5.0, 10.0)
ROUNDS = 15
FRAME_BYTES = 576 * 4 + 16  # a decode step's hidden state and its hot header, about


def resume_ms(gaps_ms: tuple[float, ...] = GAPS_MS, rounds: int = ROUNDS
              ) -> tuple[tuple[float, float], ...]:
    """((gap ms, extra ms of one resume after that gap), ...), the extras as medians of
    paired differences (a cold run, then a warm one at once)."""
    import torch

    from core.cluster.measure_workloads import matrices, sliver_layers
    from core.engine.linear import linear

    attn_half, _, x = sliver_layers(1)
    blocks, _ = matrices("q4_1")
    xb = torch.randn(1, 2048)
    turn = itertools.count()

    def half() -> float:
        t0 = time.perf_counter()
        attn_half(x, 0)
        linear(xb, blocks[next(turn) % len(blocks)], "wo")  # a block not read just before
        return time.perf_counter() - t0

    out = []
    with torch.inference_mode(), _FrameEcho() as echo:
        half(), echo.round_trip(0.0)  # first touch
        for gap in gaps_ms:
            extras = []
            for _ in range(rounds):
                time.sleep(gap / 1e3)  # the link emulation's sends and rank 0's waits
                cold = half()
                warm = half()
                cold += echo.round_trip(gap / 1e3)
                warm += echo.round_trip(0.0)
                extras.append(cold - warm)
            out.append((gap, max(0.0, statistics.median(extras) * 1e3)))
    return tuple(out)


def _usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _pin(cores: list[int], i: int) -> None:
    """Move the calling thread (and threads it starts) to `cores[i]` if there are two."""
    if len(cores) > 1:
        os.sched_setaffinity(threading.get_native_id(), {cores[i]})


class _FrameEcho:
    """A ZeroMQ DEALER -> ROUTER echo over loopback TCP, each end with its own context
    (I/O thread) as two devices have; the server end in a thread blocked on its socket as
    rank 0 is between allreduces, on another core than ours if the device has two. Each
    message waits its hold first, as core/comm/linkemu.py's sends do."""

    def __enter__(self) -> _FrameEcho:
        import zmq

        self._cores = _usable_cores()
        self._hold = 0.0  # what the server waits before it answers (set by round_trip)
        self._stop = threading.Event()
        self._port: queue.Queue[int] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="measure-idle", daemon=True)
        self._thread.start()
        self.port = self._port.get(timeout=10)
        _pin(self._cores, 0)  # back to every core on exit
        self._ctx = zmq.Context()
        self._dealer = self._ctx.socket(zmq.DEALER)
        self._dealer.connect(f"tcp://127.0.0.1:{self.port}")
        self._buf = bytearray(FRAME_BYTES)
        return self

    def _serve(self) -> None:
        import zmq

        _pin(self._cores, 1)
        ctx = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        # any local process can reach a loopback port: a bigger message only drops its
        # sender, and nothing read from the socket says how long to hold (self._hold)
        router.setsockopt(zmq.MAXMSGSIZE, FRAME_BYTES)
        self._port.put(router.bind_to_random_port("tcp://127.0.0.1"))
        buf = bytearray(FRAME_BYTES)
        try:
            while not self._stop.is_set():
                if router.poll(50):
                    ident = router.recv()
                    while router.getsockopt(zmq.RCVMORE):  # one frame or several: ours is one
                        router.recv_into(buf)
                    precise_sleep(self._hold)
                    router.send(ident, zmq.SNDMORE)
                    router.send(buf)
        finally:
            router.close(0)
            ctx.term()

    def round_trip(self, hold_s: float) -> float:
        """Seconds of a round trip beyond its two holds of `hold_s`."""
        self._hold = hold_s
        precise_sleep(hold_s)
        t0 = time.perf_counter()
        self._dealer.send(self._buf)
        if not self._dealer.poll(5000):
            raise TimeoutError("the loopback frame echo did not come back")
        self._dealer.recv_into(self._buf)
        return time.perf_counter() - t0 - hold_s

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._dealer.close(0)
        self._ctx.term()
        if len(self._cores) > 1:
            os.sched_setaffinity(threading.get_native_id(), set(self._cores))
