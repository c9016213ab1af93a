"""What the Devices panel shows per device (core side; field names match app/device_status.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DeviceStatus:
    """One device (or local rank) of a session, as of its last report."""

    name: str
    role: str = "worker"  # "master" | "worker"
    state: str = "ready"  # "starting", "ready", "busy", "offline"
    share: str = ""  # e.g. "2 KV heads · 96 MLP columns"
    resident_blocks: int = 0
    budget_blocks: int = 0  # the window
    total_blocks: int = 0  # layer blocks of its share (window == total: all resident)
    resident_bytes: int = 0
    budget_bytes: int = 0
    rtt_ms: float | None = None
    tokens_per_s: float | None = None
    rss_mb: float | None = None
