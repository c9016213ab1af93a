"""Which paired workers answer right now: a CURVE ping to each, all in parallel.

A Session pings its workers before planning, so one switched-off laptop does not keep the
model from loading: the silent ones are left out of the plan and shown offline.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from core.cluster.worker_link import WorkerLink
from core.cluster.worker_spec import WorkerSpec
from core.comm.curve import KeyPair

PING_TIMEOUT_S = 4.0  # CURVE handshake + ping; generous: a busy 2-core box needs >1.5 s


def answers(spec: WorkerSpec, identity: KeyPair, timeout: float = PING_TIMEOUT_S) -> bool:
    """Whether the worker of `spec` answers a ping within `timeout` (on a throwaway link)."""
    link = WorkerLink(spec.name, spec.endpoint, spec.public_key, identity)
    try:
        return link.probe(timeout)
    finally:
        link.close()


def split_answering(specs: list[WorkerSpec], identity: KeyPair,
                    timeout: float = PING_TIMEOUT_S) -> tuple[list[WorkerSpec],
                                                              list[WorkerSpec]]:
    """(the workers that answer, the others), each in `specs` order. Pinged in parallel, so
    switched-off devices cost `timeout` once, not each."""
    if not specs:
        return [], []
    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        ok = list(pool.map(lambda s: answers(s, identity, timeout), specs))
    return ([s for s, good in zip(specs, ok, strict=True) if good],
            [s for s, good in zip(specs, ok, strict=True) if not good])
