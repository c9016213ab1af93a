"""Choose which devices take part, and their shares, for the fastest predicted decode.

    choice = choose(model_bytes, me, others, forced={"mini-pc"}, emu=None, window=None)
    choice.members, choice.shares, choice.prediction, choice.left_out["tablet"]

Every subset of the other devices that holds the forced ones is tried (greedy past
MAX_EXHAUSTIVE devices), each with a few share rules (by read speed, by read speed capped
at each device's memory, by memory budget, equal), and priced by the cost model. Plans
whose shares fit the memory budgets beat plans that do not; among equals the lowest
predicted ms/token wins. So a device that only adds link latency is left out when the
model fits without it, and `left_out` says what it would have cost. `groups` holds what
sets of workers probed together add to a round trip (core/cluster/speeds.py,
group_extra_ms); a set never probed is priced as its smallest probed superset.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.cluster.cost_model import Member, Prediction, predict
from core.cluster.model_bytes import ModelBytes
from core.comm.linkemu import LinkEmulation
from core.engine.auto_window import OVERHEAD_BYTES
from core.engine.options import Window
from core.errors import TpiError
from core.shard.plan import Plan, make_plan

MAX_EXHAUSTIVE = 10  # 2^10 subsets x 4 share rules: still well under a second
Groups = Mapping[frozenset[str], float]  # worker names probed together -> ms added


@dataclass(frozen=True)
class Choice:
    """The plan to run: its members in rank order ([0] = this computer) and shares."""

    members: tuple[Member, ...]
    shares: tuple[float, ...]
    plan: Plan
    prediction: Prediction
    left_out: dict[str, str] = field(default_factory=dict)  # device name -> why

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]


def _rank_key(p: Prediction) -> tuple[bool, float]:
    return (not p.fits, p.ms_per_token)


def _layer_gbps(model: ModelBytes, m: Member) -> float:
    """A device's read speed over the model's own mix of layer formats."""
    layer = {k: model.attn.get(k, 0) + model.mlp.get(k, 0) for k in {*model.attn, *model.mlp}}
    total = sum(layer.values()) or 1
    secs = sum(n / m.speed.gbps(f) for f, n in layer.items()) or 1e-9
    return total / secs


def share_rules(model: ModelBytes, members: list[Member]) -> list[list[float]]:
    """Candidate shares: by speed, by speed within memory, by budget, equal."""
    speed = [_layer_gbps(model, m) for m in members]
    layers = max(1, sum(model.attn.values()) + sum(model.mlp.values()))
    head = sum(model.head.values())
    caps = [max(0.0, (m.budget - OVERHEAD_BYTES - (head if r == 0 else 0)) / layers)
            for r, m in enumerate(members)]
    rules = [speed, _water_fill(speed, caps), [float(max(1, m.budget)) for m in members],
             [1.0] * len(members)]
    return [r for r in rules if sum(r) > 0]


def _water_fill(weights: list[float], caps: list[float]) -> list[float]:
    """Shares in proportion to `weights`, none above its cap (fractions of 1), the excess
    passed on to the others; all of `weights` when the caps cannot hold the model."""
    if sum(caps) < 1:
        return list(weights)
    share = [0.0] * len(weights)
    free = set(range(len(weights)))
    left = 1.0
    while free and left > 1e-9:
        w = sum(weights[i] for i in free) or 1.0
        over = [i for i in free if left * weights[i] / w > caps[i] - share[i]]
        if not over:
            for i in free:
                share[i] += left * weights[i] / w
            break
        for i in over:
            left -= caps[i] - share[i]
            share[i] = caps[i]
            free.discard(i)
    return share


def group_ms(groups: Groups | None, members: list[Member]) -> float:
    """What the workers among `members` add to a round trip by answering together."""
    names = frozenset(m.name for m in members[1:])
    if len(names) < 2 or not groups:
        return 0.0
    if names in groups:
        return groups[names]
    supersets = [ms for probed, ms in groups.items() if names <= probed]
    return min(supersets) if supersets else max(groups.values())


def best_for(model: ModelBytes, members: list[Member], emu: LinkEmulation | None,
             window: Window, groups: Groups | None = None
             ) -> tuple[Plan, list[float], Prediction]:
    """The best of the share rules for this set of members."""
    best = None
    together = group_ms(groups, members)
    for shares in share_rules(model, members):
        plan = make_plan(model.config, shares)
        pred = predict(model, plan, members, emu, window, group_ms=together)
        if best is None or _rank_key(pred) < _rank_key(best[2]):
            best = (plan, shares, pred)
    assert best is not None
    return best


def _subsets(others: list[Member], forced: set[str]):
    must = [m for m in others if m.name in forced]
    free = [m for m in others if m.name not in forced]
    for k in range(len(free) + 1):
        for combo in itertools.combinations(free, k):
            yield must + list(combo)


def choose(model: ModelBytes, me: Member, others: list[Member], forced: set[str] = frozenset(),
           emu: LinkEmulation | None = None, window: Window = None,
           groups: Groups | None = None) -> Choice:
    """The fastest predicted plan over this computer and a subset of `others` that holds
    every device named in `forced`; `left_out` says why each other device is not in it."""
    unknown = forced - {m.name for m in others}
    if unknown:
        raise TpiError(f"cannot force {', '.join(sorted(unknown))} into the plan: not among "
                       "the devices answering")
    if len(others) - len(forced) > MAX_EXHAUSTIVE:
        return _greedy(model, me, others, forced, emu, window, groups)
    best = None
    for subset in _subsets(others, forced):
        members = [me, *subset]
        plan, shares, pred = best_for(model, members, emu, window, groups)
        if best is None or _rank_key(pred) < _rank_key(best.prediction):
            best = Choice(tuple(members), tuple(shares), plan, pred)
    assert best is not None
    return _explained(model, best, others, emu, window, groups)


def _greedy(model, me, others, forced, emu, window, groups) -> Choice:
    members = [me, *(m for m in others if m.name in forced)]
    plan, shares, pred = best_for(model, members, emu, window, groups)
    while True:
        trials = [(best_for(model, members + [m], emu, window, groups), m) for m in others
                  if m not in members]
        if not trials:
            break
        (p2, s2, pr2), m = min(trials, key=lambda t: _rank_key(t[0][2]))
        if _rank_key(pr2) >= _rank_key(pred):
            break
        members, plan, shares, pred = members + [m], p2, s2, pr2
    return _explained(model, Choice(tuple(members), tuple(shares), plan, pred), others, emu,
                      window, groups)


def _explained(model: ModelBytes, c: Choice, others: list[Member], emu, window,
               groups: Groups | None = None) -> Choice:
    """`c` with a sentence per device left out: what it would cost, and why it is not needed."""
    why = {}
    for m in others:
        if m in c.members:
            continue
        _, _, with_it = best_for(model, [*c.members, m], emu, window, groups)
        extra = with_it.ms_per_token - c.prediction.ms_per_token
        # resuming after each wait on a link is the link's cost too
        link = with_it.link_ms + with_it.idle_ms - c.prediction.link_ms - c.prediction.idle_ms
        cause = "of link latency" if link >= extra / 2 else "(it reads its share slowly)"
        need = ("not needed: the model fits here" if c.prediction.fits else
                "it would not make the model fit")
        why[m.name] = f"adds ~{max(extra, 0.1):.0f} ms/token {cause}; {need}"
    return Choice(c.members, c.shares, c.plan, c.prediction, why)
