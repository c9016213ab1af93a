"""What the Devices panel shows about one device (no Qt: the engine thread builds these).

`DeviceStatus` is core.cluster.device_status's (a Session reports those directly);
`from_rank_stats` builds the same rows for a plain LocalCluster.
"""

from __future__ import annotations

from typing import Any

from core.cluster.device_status import DeviceStatus

__all__ = ["DeviceStatus", "from_rank_stats"]


def from_rank_stats(stats: list[Any], busy: bool, tokens_per_s: float | None) -> list[DeviceStatus]:
    """DeviceStatus per rank from LocalCluster.rank_stats(); missing fields get defaults."""
    out: list[DeviceStatus] = []
    for s in stats:
        rank = int(getattr(s, "rank", len(out)))
        resident_blocks = int(getattr(s, "resident_blocks", 0) or 0)
        budget_blocks = int(getattr(s, "budget_blocks", 0) or 0)
        resident_bytes = int(getattr(s, "resident_bytes", 0) or 0)
        budget_bytes = getattr(s, "budget_bytes", None)
        total_blocks = int(getattr(s, "total_blocks", 0) or 0)
        total_bytes = int(getattr(s, "total_bytes", 0) or 0)
        if budget_bytes is None:
            if total_blocks and total_bytes:
                per_block = total_bytes / total_blocks
            else:
                per_block = resident_bytes / resident_blocks if resident_blocks else 0
            budget_bytes = int(per_block * min(budget_blocks, total_blocks or budget_blocks))
        share = getattr(s, "share", None)
        if share is None and hasattr(s, "kv_heads"):
            share = f"{s.kv_heads} KV heads \u00b7 {getattr(s, 'mlp_cols', 0)} MLP columns"
        out.append(DeviceStatus(
            name="This device" if rank == 0 else f"Local rank {rank}",
            role="master" if rank == 0 else "worker",
            state="busy" if busy else "ready",
            share=str(share) if share is not None else "",
            resident_blocks=resident_blocks,
            budget_blocks=budget_blocks,
            total_blocks=total_blocks,
            resident_bytes=resident_bytes,
            budget_bytes=int(budget_bytes),
            rtt_ms=getattr(s, "rtt_ms", None),
            tokens_per_s=tokens_per_s,
            rss_mb=getattr(s, "rss_mb", None),
        ))
    return out
