"""Predict ms/token (and time to first token) of a plan from measured device and link speeds.

A decode step, as the engine runs it (core/engine/rank.py, core/comm/allreduce.py):
- every layer, each rank reads its share of the attention weights, then all ranks meet in
  an allreduce; then the same for the MLP. The ranks wait for each other twice a layer,
  so each half costs the slowest rank's time: its weight bytes over its read speed for
  that format, plus its fixed per-layer cost (norms, rope, attention, Python). One rank
  alone with block-quantized layers all resident runs every layer in one compiled call
  (core/engine/stack_decode.py): it pays the reads but no per-layer Python;
- a rank whose window is smaller than its share reads the rest from disk each token,
  behind compute (prefetch): its half costs the longer of the two;
- an allreduce is a star through rank 0: each worker sends its partial, rank 0 sends the
  sum to each worker in turn. With link emulation (core/comm/linkemu.py) every send first
  waits its cost, rank 0's sends one after another: N sends on the critical path, plus
  the slowest link's round trip, plus what two or more workers answering together add
  (`group_ms`, probed at once: rank 0 handles their messages one by one, and devices that
  share cores answer one by one);
- once a step: rank 0 broadcasts the hidden state, and reads the head (final norm and
  lm_head) alone after the last layer;
- every rank that waited on a link resumes slower than one that did not (cooled caches,
  woken threads; measure_idle.py): each allreduce and the step pay the slowest member's
  measured `resume_cost` for the time it kept the ranks waiting, beyond the cost of the
  wait the link's echoes already held.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.cluster.measures import PROBE_BYTES, DeviceSpeed, LinkSpeed
from core.cluster.model_bytes import Bytes, ModelBytes, scaled
from core.comm.linkemu import LinkEmulation
from core.engine.auto_window import OVERHEAD_BYTES, window_for_budget
from core.engine.options import Window
from core.shard.plan import Plan
from core.shard.qformats import FORMATS as QFORMATS

HEADER_BYTES = 16  # the data plane's hot header (core/comm/wire.py)
STEP_HEADER_BYTES = 96  # a step broadcast's msgpack header, about


@dataclass(frozen=True)
class Member:
    """One rank of a plan: the device it runs on, its link from this computer (None: on
    this computer), and the memory it may use."""

    name: str
    speed: DeviceSpeed
    link: LinkSpeed | None
    budget: int

    def to_dict(self) -> dict:
        """What the planner knew of it, as `plan --json` and `generate --json` report."""
        return {"device": self.speed.to_dict(),
                "link": self.link.to_dict() if self.link else None, "budget": self.budget}


@dataclass(frozen=True)
class Prediction:
    ms_per_token: float
    ttft_ms: float  # for `prompt_tokens`
    compute_ms: float  # layers on the slowest rank of each half, plus the head
    link_ms: float  # allreduces and the step broadcast
    stream_ms: float  # what disk reads add over compute
    windows: tuple[int | None, ...]
    fits: bool  # every rank's share fits its memory budget with every block resident
    prompt_tokens: int = 64
    group_ms: float = 0.0  # what the workers answering together add to a round trip
    idle_ms: float = 0.0  # what resuming after each wait on the links adds, per token

    def to_dict(self) -> dict:
        return {"ms_per_token": round(self.ms_per_token, 2), "ttft_ms": round(self.ttft_ms, 1),
                "compute_ms": round(self.compute_ms, 2), "link_ms": round(self.link_ms, 2),
                "stream_ms": round(self.stream_ms, 2), "fits": self.fits,
                "windows": ["all" if w is None else w for w in self.windows],
                "prompt_tokens": self.prompt_tokens, "group_ms": round(self.group_ms, 4),
                "idle_ms": round(self.idle_ms, 2)}


def read_ms(b: Bytes, speed: DeviceSpeed) -> float:
    """Milliseconds to stream bytes `b` (by format) through this device's kernels."""
    return sum(n / (speed.gbps(fmt) * 1e6) for fmt, n in b.items())


def send_ms(emu: LinkEmulation | None, nbytes: int) -> float:
    return emu.cost_s(nbytes) * 1e3 if emu is not None else 0.0


def round_trip_ms(link: LinkSpeed | None, here: DeviceSpeed, there: DeviceSpeed) -> float:
    """A data-plane message's round trip over `link` between devices `here` and `there`.

    The link was probed with control-port echoes, which also pay the control software on
    both ends; the data plane does not (core/cluster/measure_messaging.py). So the two
    ends' `msg_ms` come off the echo's median, but the result is never below what the
    two ends' data-plane frames cost on loopback (`frame_ms`), nor above the echo."""
    if link is None:
        return 0.0
    echo = link.median_ms
    bare = echo - here.msg_ms - there.msg_ms
    return min(echo, max(bare, here.frame_ms + there.frame_ms))


def wire_ms(link: LinkSpeed | None, nbytes: int, here: DeviceSpeed, there: DeviceSpeed
            ) -> float:
    """One data-plane message's time on a real link: half its round trip, plus the bytes
    beyond the probe's at the link's speed."""
    if link is None:
        return 0.0
    more = max(0, nbytes - PROBE_BYTES)
    rate = more * 8 / (link.mbps * 1e3) if link.mbps else 0.0
    return round_trip_ms(link, here, there) / 2 + rate


def allreduce_ms(members: list[Member], emu: LinkEmulation | None, nbytes: int,
                 group_ms: float = 0.0) -> float:
    """One star allreduce of `nbytes` per rank (see the module docstring)."""
    n = len(members)
    if n == 1:
        return 0.0
    sent = send_ms(emu, nbytes + HEADER_BYTES)
    here = members[0].speed
    up = max(wire_ms(m.link, nbytes, here, m.speed) for m in members[1:])
    return n * sent + 2 * up + (group_ms if n > 2 else 0.0)


def resume_ms(members: list[Member], gap_ms: float) -> float:
    """What resuming after `gap_ms` of waiting adds beyond what the links' round trips
    already hold (0 alone): the slowest member's measured cost for that wait, less its
    cost for the wait of one round trip of the slowest link, which the link's echoes
    (round_trip_ms) waited too. Without the second term the bench's 0 ms cells came out
    10-35% over: a wait no longer than a round trip is priced in the echo already."""
    if len(members) < 2:
        return 0.0
    here = members[0].speed
    priced = max(round_trip_ms(m.link, here, m.speed) for m in members[1:])
    return max(0.0, max(m.speed.resume_cost(gap_ms) - m.speed.resume_cost(priced)
                        for m in members))


def stackable(model: ModelBytes) -> bool:
    """Can one rank run this model's decode as one compiled call (stack_decode.py)? Only
    with block-quantized layers: the fused kernels take no float matrices."""
    layer_formats = {*model.attn, *model.mlp}
    return bool(layer_formats) and layer_formats <= set(QFORMATS)


@dataclass(frozen=True)
class _RankLoad:
    attn: Bytes
    mlp: Bytes
    params: float  # weights (for prefill FLOPs)
    share_bytes: int


def _loads(model: ModelBytes, plan: Plan) -> list[_RankLoad]:
    cfg = model.config
    hd, d = cfg.head_dim, cfg.hidden_size
    out = []
    for r in plan.ranks:
        kv = r.num_kv_heads / cfg.num_kv_heads
        cols = r.num_cols / cfg.intermediate_size
        attn, mlp = scaled(model.attn, kv), scaled(model.mlp, cols)
        attn_params = d * (cfg.num_heads + 2 * cfg.num_kv_heads) * hd + cfg.num_heads * hd * d
        params = cfg.num_layers * (kv * attn_params + cols * 3 * d * cfg.intermediate_size)
        out.append(_RankLoad(attn, mlp, params, sum(attn.values()) + sum(mlp.values())))
    return out


def _window(window: Window, budget: int, load: _RankLoad, layers: int, fixed: int
            ) -> int | None:
    if window != "auto":
        return window
    blocks = 2 * layers
    return window_for_budget(budget, [max(1, load.share_bytes // blocks)] * blocks, fixed)


def predict(model: ModelBytes, plan: Plan, members: list[Member],
            emu: LinkEmulation | None = None, window: Window = None,
            prompt_tokens: int = 64, group_ms: float = 0.0) -> Prediction:
    """The plan's decode ms/token and TTFT on `members` (rank order, [0] = this computer);
    `group_ms`: what its workers answering together add to a round trip (probed)."""
    group_ms = group_ms if len(members) > 2 else 0.0
    cfg = model.config
    L, blocks = cfg.num_layers, 2 * cfg.num_layers
    loads = _loads(model, plan)
    head_bytes = sum(model.head.values())
    att, mlp, stream_extra, windows, fits = [], [], 0.0, [], True
    one_call = len(members) == 1 and stackable(model)
    for r, (m, load) in enumerate(zip(members, loads, strict=True)):
        fixed = head_bytes if r == 0 else 0
        w = _window(window, m.budget, load, L, fixed)
        windows.append(w)
        fits = fits and load.share_bytes + fixed + OVERHEAD_BYTES <= m.budget
        # one rank with every block resident runs all layers in one compiled call
        # (core/engine/stack_decode.py): no per-layer Python for `layer_ms` to price
        per_layer = 0.0 if one_call and (w is None or w >= blocks) else m.speed.layer_ms
        a = read_ms(load.attn, m.speed) / L + per_layer / 2
        f = read_ms(load.mlp, m.speed) / L + per_layer / 2
        if w is not None and w < blocks:  # the rest comes from disk, behind compute
            disk = load.share_bytes * (blocks - w) / blocks / (m.speed.disk_gbps * 1e6) / L
            slow = max(1.0, disk / max(1e-9, a + f))
            stream_extra = max(stream_extra, (a + f) * (slow - 1) * L)
            a, f = a * slow, f * slow
        att.append(a)
        mlp.append(f)
    hidden = cfg.hidden_size * 4
    ar = allreduce_ms(members, emu, hidden, group_ms)
    step = ((len(members) - 1) * send_ms(emu, hidden + STEP_HEADER_BYTES)
            + max((wire_ms(m.link, hidden, members[0].speed, m.speed) for m in members[1:]),
                  default=0.0) + group_ms / 2)
    head = read_ms(model.head, members[0].speed)
    compute = L * (max(att) + max(mlp)) + head
    link = 2 * L * ar + step
    idle = 2 * L * resume_ms(members, ar) + resume_ms(members, step + head)
    ms = compute + link + idle
    # prefill: every weight once plus 2 FLOPs per weight and token at GEMM speed
    pre = [read_ms(ld.attn, m.speed) + read_ms(ld.mlp, m.speed)
           + 2 * ld.params * prompt_tokens / (m.speed.gflops * 1e6)
           + L * m.speed.layer_ms for m, ld in zip(members, loads, strict=True)]
    ar_prompt = allreduce_ms(members, emu, hidden * prompt_tokens, group_ms)
    ttft = (max(pre) + head + 2 * L * (ar_prompt + resume_ms(members, ar_prompt))
            + (len(members) - 1) * send_ms(emu, hidden * prompt_tokens))
    return Prediction(ms, ttft, compute, link, stream_extra, tuple(windows), fits,
                      prompt_tokens, group_ms, idle)
