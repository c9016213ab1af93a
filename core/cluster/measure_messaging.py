"""What a control-port echo costs this device beyond what the data plane pays per message.

The master probes a link with echoes on the worker's control port (core/cluster/speeds.py),
the only port a worker has open before ranks start. Those echoes pay the control path's
software on both ends (msgpack header and its checks, tensors decoded and re-encoded,
the worker daemon's loop), which an allreduce on the data plane does not: it sends a
16-byte struct header and receives straight into a buffer (core/comm/allreduce.py). On
this project's 2-core test machine a control echo took ~400 us on loopback where a
data-plane-style frame took ~180 us; priced as link latency, that difference alone was
~13 ms/token of a 30-layer model's 60 allreduces.

So each device measures, on loopback in one process (server in a thread, the same CURVE
sockets), the round trip of both kinds of message and reports per end:
- `msg_ms`: half the difference of the fastest of each (what one end's control software
  adds to a round trip);
- `frame_ms`: half a data-plane frame's round trip (the least one end can add).
The cost model takes the two ends' `msg_ms` off a link's echo round trip and never goes
below their `frame_ms` (core/cluster/cost_model.py, wire_ms).
"""

from __future__ import annotations

import statistics
import threading
import time

ROUNDS = 150
HOT_HEADER = 16  # core/comm/wire.py's hot header
FRAME_BYTES = 576 * 4  # a decode step's hidden state, about (the default model's)


def loopback_ms(rounds: int = ROUNDS) -> tuple[list[float], list[float]]:
    """Round trips in ms on loopback: (control echoes, data-plane frames), alternated one
    by one so that whatever else runs here weighs on both alike."""
    import numpy as np
    import torch
    import zmq

    from core.cluster.measures import PROBE_BYTES
    from core.comm.control import ControlClient, ControlServer
    from core.comm.curve import (
        CurveClientConfig,
        CurveServerConfig,
        Keys,
        make_curve_client,
        make_curve_server,
    )

    keys, client_keys = Keys.generate(), Keys.generate()

    def only_ours(key: str) -> bool:  # the ports are on loopback, open to any local user
        return key == client_keys.public_key

    ctx = zmq.Context.instance()  # the control sockets' own: one CURVE authenticator
    ctl = ControlServer("127.0.0.1", ops={"echo"}, curve=CurveServerConfig(keys, only_ours))
    raw = ctx.socket(zmq.ROUTER)
    guard = make_curve_server(raw, keys, only_ours)
    raw_ep = f"tcp://127.0.0.1:{raw.bind_to_random_port('tcp://127.0.0.1')}"
    stop = threading.Event()

    def serve() -> None:
        poller = zmq.Poller()
        poller.register(ctl.sock, zmq.POLLIN)
        poller.register(raw, zmq.POLLIN)
        hdr, buf = bytearray(HOT_HEADER), bytearray(FRAME_BYTES)
        while not stop.is_set():
            ready = dict(poller.poll(50))
            if ctl.sock in ready:  # as the worker daemon answers `echo` (core/worker.py)
                got = ctl.recv(0)
                if got is not None:
                    ident, msg = got
                    t = msg.meta.get("t")
                    ctl.send(ident, "echo", {"t": t if isinstance(t, int | float) else 0},
                             msg.tensors)
            if raw in ready:  # as rank 0 answers a partial (allreduce.py, ZeroMQ star)
                ident = raw.recv()
                raw.recv_into(hdr)
                raw.recv_into(buf)
                raw.send(ident, zmq.SNDMORE)
                raw.send(hdr, zmq.SNDMORE)
                raw.send(buf)

    server = threading.Thread(target=serve, name="measure-messaging", daemon=True)
    server.start()
    cc = ControlClient(ctl.endpoint, ops={"echo"},
                       curve=CurveClientConfig(client_keys, keys.public_key))
    dealer = ctx.socket(zmq.DEALER)
    make_curve_client(dealer, client_keys, keys.public_key)
    dealer.connect(raw_ep)
    probe = torch.zeros(PROBE_BYTES, dtype=torch.uint8)
    arr, hdr = np.zeros(FRAME_BYTES // 4, dtype=np.float32), bytearray(HOT_HEADER)
    ctl_s, frame_s = [], []
    try:
        for i in range(rounds + 10):  # the first few: connections and CURVE handshakes
            t0 = time.perf_counter()
            cc.send("echo", {"t": t0}, (probe,))
            if cc.recv(timeout=5.0) is None:
                raise TimeoutError("the loopback control echo did not come back")
            t1 = time.perf_counter()
            dealer.send(bytes(HOT_HEADER), zmq.SNDMORE)
            dealer.send(arr)
            if not dealer.poll(5000):
                raise TimeoutError("the loopback frame echo did not come back")
            dealer.recv_into(hdr)
            dealer.recv_into(arr)
            t2 = time.perf_counter()
            if i >= 10:
                ctl_s.append(t1 - t0)
                frame_s.append(t2 - t1)
    finally:
        stop.set()
        server.join(2.0)
        cc.close()
        dealer.close(0)
        raw.close(0)
        ctl.close()
        guard.close()
    return [x * 1e3 for x in ctl_s], [x * 1e3 for x in frame_s]


def per_end_ms(rounds: int = ROUNDS) -> tuple[float, float]:
    """(msg_ms, frame_ms) of this device, as the module docstring defines them.

    The control software's extra is a fixed cost, so it is taken from the fastest round
    trips of each kind (what is left once nothing else got in the way); how much other
    work gets in the way is the link's and the machine's, and stays in the link's median
    echo. A frame's round trip is the median: the data plane meets that noise too."""
    ctl, frame = loopback_ms(rounds)
    return max(0.0, min(ctl) - min(frame)) / 2, statistics.median(frame) / 2
