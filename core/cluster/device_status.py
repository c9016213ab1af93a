"""What the Devices panel shows per device, and the one mapping from a rank's RankStats."""

from __future__ import annotations

from dataclasses import dataclass

from core.cluster.measures import DeviceSpeed, LinkSpeed
from core.engine.rank_stats import RankStats


@dataclass
class DeviceStatus:
    """One device (or local rank) of a session, as of its last report."""

    name: str
    role: str = "worker"  # "master" | "worker"
    # "starting", "ready", "busy", "offline", "failed" (could not start: left out),
    # "standby" (answers, but the planner predicts the model is faster without it)
    state: str = "ready"
    share: str = ""  # e.g. "2 KV heads · 96 MLP columns"
    resident_blocks: int = 0
    budget_blocks: int = 0  # the window
    total_blocks: int = 0  # layer blocks of its share (window == total: all resident)
    resident_bytes: int = 0
    budget_bytes: int = 0
    rtt_ms: float | None = None
    tokens_per_s: float | None = None
    rss_mb: float | None = None
    measured: str = ""  # its measured speeds, e.g. "reads 2.2 GB/s (q4_1) · disk 0.9 GB/s"
    predicted_ms: float | None = None  # the plan's predicted ms/token (this device's row)


def speed_note(s: DeviceSpeed) -> str:
    """A device's measured speeds in one line for its card."""
    reads = " · ".join(f"{v:.1f} GB/s {k}" for k, v in sorted(s.read_gbps.items()))
    waits = f" · +{s.resume_cost(2.0):.2f} ms after a 2 ms wait" if s.resume_ms else ""
    return (f"reads {reads} · disk {s.disk_gbps:.1f} GB/s · "
            f"{s.free_bytes / 2**30:.1f} GB free · {s.cores} core{'s' if s.cores != 1 else ''}"
            f"{waits}")


def link_note(link: LinkSpeed | None) -> str:
    """A link's measured round trips and bandwidth ("" for this computer)."""
    if link is None or not link.rtt_ms:
        return ""
    rate = f" · {link.mbps:.0f} Mbit/s" if link.mbps else ""
    return f" · link {link.median_ms:.2f} ms (p90 {link.p90_ms:.2f}){rate}"


def with_rank_stats(row: DeviceStatus, s: RankStats, total_kv_heads: int) -> DeviceStatus:
    """`row` filled with what rank stats `s` say: its share and its memory window."""
    per_block = s.total_bytes / s.total_blocks if s.total_blocks else 0
    heads = f"{s.kv_heads} KV head" + ("s" if s.kv_heads != 1 else "")
    row.share = (f"{heads} ({100 * s.kv_heads / (total_kv_heads or 1):.0f}%) "
                 f"\u00b7 {s.mlp_cols} MLP columns")
    row.resident_blocks, row.budget_blocks = s.resident_blocks, s.budget_blocks
    row.total_blocks = s.total_blocks
    row.resident_bytes = s.resident_bytes
    row.budget_bytes = int(per_block * min(s.budget_blocks, s.total_blocks))
    row.rss_mb = s.rss_mb
    return row


def local_rows(stats: list[RankStats], busy: bool,
               tokens_per_s: float | None) -> list[DeviceStatus]:
    """Rows of a cluster on this machine alone (LocalCluster.rank_stats())."""
    total = sum(s.kv_heads for s in stats)
    return [with_rank_stats(DeviceStatus(
        name="This device" if s.rank == 0 else f"Local rank {s.rank}",
        role="master" if s.rank == 0 else "worker", state="busy" if busy else "ready",
        tokens_per_s=tokens_per_s), s, total) for s in stats]
