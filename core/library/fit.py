"""Will a catalog model run here? This computer alone, with the paired devices, or not.

Decoding reads every weight once per token, so a model needs its size in memory plus a
fixed allowance per process (KV cache, activations, the runtime: auto_window's
OVERHEAD_BYTES). With a memory window ("auto" or N blocks) a rank keeps only a few of its
layer blocks resident and streams the rest from disk, so a model larger than memory can
still run, slower: then only the embeddings/head, the window's blocks and the allowance
must fit. The expected speed scales a measured one (weight bytes read per second, from
the last replies here) by the model's size; unknown until a reply was measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from core.engine.auto_window import MIN_WINDOW, OVERHEAD_BYTES
from core.library.catalog import CatalogEntry


class Verdict(Enum):
    THIS_COMPUTER = "Fits this computer"
    WITH_DEVICES = "Fits with your devices"
    TOO_BIG = "Too big"


@dataclass(frozen=True)
class Resources:
    """What the models would run on."""

    local_budget: int  # bytes this computer can give (its available memory)
    device_budgets: tuple[int, ...] = ()  # each paired device's memory budget
    window: str | int = "auto"  # the memory window setting: "auto", "all" or blocks
    local_ranks: int = 1  # processes on this computer
    local_bytes_per_s: float | None = None  # measured on this computer alone
    cluster_bytes_per_s: float | None = None  # measured with the paired devices


@dataclass(frozen=True)
class Fit:
    verdict: Verdict
    windowed: bool  # fits only by streaming layer blocks from disk
    resident_bytes: int  # memory it needs with every block resident
    ms_per_token: float | None  # expected, from a measured speed; None when unknown
    detail: str  # one sentence for the user


def layer_bytes(entry: CatalogEntry) -> tuple[int, int]:
    """(embeddings + head bytes, one layer block's bytes), estimated from the shape."""
    bits = 8 * entry.size / entry.parameters  # bits per weight in this quantization
    fixed = min(entry.size // 2, int(2 * entry.vocab_size * entry.hidden_size * bits / 8))
    return fixed, max(1, (entry.size - fixed) // entry.layers)


def window_blocks(window: str | int) -> int | None:
    """Blocks a rank keeps at least; None when the window keeps all of them."""
    if window == "all":
        return None
    if isinstance(window, int) and not isinstance(window, bool) and window >= 1:
        return window
    return MIN_WINDOW  # auto: as few as the budget needs, never under two


def assess(entry: CatalogEntry, res: Resources) -> Fit:
    """The verdict for `entry` on `res`, with the expected speed when one is measured."""
    resident = entry.size + OVERHEAD_BYTES * res.local_ranks
    n_devices = len(res.device_budgets)
    cluster_budget = res.local_budget + sum(res.device_budgets)
    if n_devices:  # a Session weighs this computer like its largest device (master_budget)
        cluster_budget = min(res.local_budget, max(res.device_budgets)) + sum(res.device_budgets)
    cluster_resident = entry.size + OVERHEAD_BYTES * (res.local_ranks + n_devices)
    blocks = window_blocks(res.window)
    fixed, block = layer_bytes(entry)

    def windowed_need(processes: int) -> int | None:
        if blocks is None or blocks >= entry.layers:
            return None
        return fixed + blocks * block + OVERHEAD_BYTES * processes

    if resident <= res.local_budget:
        return _fit(Verdict.THIS_COMPUTER, False, entry, res.local_bytes_per_s,
                    "fits in this computer's memory")
    if n_devices and cluster_resident <= cluster_budget:
        return _fit(Verdict.WITH_DEVICES, False, entry, res.cluster_bytes_per_s,
                    f"fits in the memory of this computer and {_devices(n_devices)}")
    local_win = windowed_need(res.local_ranks)
    if local_win is not None and local_win <= res.local_budget:
        return _fit(Verdict.THIS_COMPUTER, True, entry, None,
                    "runs here with the memory window: layers stream from disk, slowly")
    cluster_win = windowed_need(res.local_ranks + n_devices)
    if n_devices and cluster_win is not None and cluster_win <= cluster_budget:
        return _fit(Verdict.WITH_DEVICES, True, entry, None,
                    f"runs with {_devices(n_devices)} and the memory window: layers "
                    "stream from disk, slowly")
    need = cluster_resident if n_devices else resident
    more = "" if n_devices else "; pairing devices adds their memory"
    return Fit(Verdict.TOO_BIG, False, resident, None,
               f"needs about {human_bytes(need)} of memory, "
               f"{human_bytes(cluster_budget)} is available{more}")


def _fit(verdict: Verdict, windowed: bool, entry: CatalogEntry, bytes_per_s: float | None,
         detail: str) -> Fit:
    ms = 1000.0 * entry.size / bytes_per_s if bytes_per_s and not windowed else None
    resident = entry.size + OVERHEAD_BYTES
    return Fit(verdict, windowed, resident, ms, detail[:1].upper() + detail[1:])


def _devices(n: int) -> str:
    return "your paired device" if n == 1 else f"your {n} paired devices"


def human_bytes(n: float) -> str:
    """Bytes as the user reads them: 98 MB, 4.7 GB."""
    if n < 1e9:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e9:.1f} GB" if n < 100e9 else f"{n / 1e9:.0f} GB"
