"""WorkerSpec: a paired device as a Session takes it (from the roster, or a test)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerSpec:
    """A paired worker the user added: where its control port is and what it may use."""

    name: str
    endpoint: str  # its CURVE control port, tcp://host:port (PeerInfo.control_port)
    public_key: str
    memory_budget: int  # bytes; sets its share of the model
    forced: bool = False  # the user wants it used even where the planner would leave it out
