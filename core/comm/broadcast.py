"""Step broadcast: rank 0 tells every worker what to run next, with an optional tensor.

Once per forward step (not per layer), so the header is a full codec message:
validated msgpack meta such as {"op": "step", "pos": 0} or {"op": "stop"} plus, for a
step, the embedded hidden states [T, D].
"""

from __future__ import annotations

from typing import Any

import torch

from core.comm import wire
from core.comm.codec import decode, encode
from core.comm.plane import DataPlane
from core.comm.transport import wait_for
from core.errors import PeerError, ProtocolError

STEP_OP = "step"


class StepTimeout(PeerError):
    """recv_step's timeout passed without a step from rank 0."""


class BadStep(ProtocolError):
    """recv_step received a whole message that is not a valid step; it was dropped and the
    link is still in step, so the worker may report it and wait for the next one."""


def send_step(p: DataPlane, meta: dict[str, Any], t: torch.Tensor | None) -> None:
    """Rank 0: send `meta` (and `t`) to every worker."""
    if p.rank != 0:
        raise RuntimeError("only rank 0 broadcasts steps")
    if p.world_size == 1:
        return
    frames = encode(STEP_OP, meta, [] if t is None else [t])
    hdr = wire.pack(wire.Kind.STEP)
    trackers: list = []
    for r in range(1, p.world_size):
        p.send(p.star, [p.ident_of[r], hdr, *frames], trackers)
    p.wait_sent(trackers)


def recv_step(p: DataPlane, timeout: float | None) -> tuple[dict[str, Any], torch.Tensor | None]:
    """Worker: wait for the next step; None waits until a step, close() or rank 0 dies."""
    sock = p.star
    n = wait_for(lambda: sock.recv_into(p.hdr), timeout=timeout, closing=p.closing,
                 watch=p.watch,
                 on_timeout=lambda: StepTimeout(f"rank 0 sent no step within {timeout:g} s."))
    try:
        p.check_hot(sock, n, wire.Kind.STEP, 0, 0)  # drains the rest when it raises
    except ProtocolError as e:
        raise BadStep(str(e)) from None
    frames = [sock.recv(copy=False)] if sock.rcvmore else []
    while sock.rcvmore:
        frames.append(sock.recv(copy=False))
    try:
        msg = decode(frames, ops={STEP_OP}, limits=p.limits)
    except ProtocolError as e:
        raise BadStep(str(e)) from None
    if len(msg.tensors) > 1:
        raise BadStep("A step message carries more than one tensor.")
    return msg.meta, (msg.tensors[0] if msg.tensors else None)
