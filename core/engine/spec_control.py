"""How many tokens to draft per step (k), from measured costs and the acceptance rate.

A speculative step costs k draft steps plus one target step over k+1 positions, and
yields on average E(k) = 1 + a + ... + a^k tokens (a: the chance a draft token is kept).
A plain step costs one target step and yields one token. With `auto`, the k in 1..K_MAX
that maximises tokens per millisecond is used when it beats plain decoding by a margin,
else plain decoding runs (re-tried now and then while a better k remains conceivable).
On a fast link (one machine) the target step is barely dearer than a draft step, so
speculation never pays and stays off; over a slow link the target step is mostly
waiting, the draft is nearly free by comparison, and k grows with the acceptance rate.

Target step time is fitted as base + per_token * n over recent steps of n positions
(weighted least squares with decay), with the draft's own per-token slope as the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import TpiError

AUTO = "auto"
K_MAX = 12
MARGIN = 1.05  # speculate only when predicted at least 5% faster than plain decoding
PROBE_K = 4
PLAIN_FIRST = 1  # plain steps measured before the first speculative one
DECAY = 0.93  # weight of older observations, per observation
BACKOFF = (16, 64, 256)  # plain tokens before re-trying speculation that did not pay


@dataclass(frozen=True)
class Speculate:
    """--speculate auto|off|K and --draft self|MODEL."""

    k: int | None = None  # None = auto, 0 = off, else a fixed k
    draft: str = "self"

    @property
    def off(self) -> bool:
        return self.k == 0


def parse_speculate(text: str, draft: str = "self") -> Speculate:
    """'auto' -> adaptive, 'off' -> none, '4' -> always 4 draft tokens a step."""
    word = str(text).strip().lower()
    if not draft or not str(draft).strip():
        raise TpiError("--draft takes 'self' or a model folder / .gguf file")
    if word == AUTO:
        return Speculate(None, draft)
    if word in ("off", "0", "none"):
        return Speculate(0, draft)
    try:
        k = int(word)
    except ValueError:
        raise TpiError(f"--speculate takes auto, off or a number of draft tokens 1-{K_MAX} "
                       f"(got {text!r})") from None
    if not 1 <= k <= K_MAX:
        raise TpiError(f"--speculate takes a number of draft tokens from 1 to {K_MAX} "
                       f"(got {k})")
    return Speculate(k, draft)


class _Fit:
    """Decayed weighted least squares of ms = base + slope * n, with a prior slope."""

    def __init__(self, prior_slope: float):
        self.prior = prior_slope
        self.w = self.x = self.y = self.xx = self.xy = 0.0

    def add(self, n: int, ms: float) -> None:
        d = DECAY
        self.w, self.x, self.y = self.w * d + 1, self.x * d + n, self.y * d + ms
        self.xx, self.xy = self.xx * d + n * n, self.xy * d + n * ms

    @property
    def known(self) -> bool:
        return self.w > 0

    def slope(self) -> float:
        if not self.w:
            return self.prior
        mx = self.x / self.w
        var = self.xx / self.w - mx * mx
        cov = self.xy / self.w - mx * self.y / self.w
        ridge = 0.25  # pulls toward the prior when every step had the same n
        return max(0.0, (cov + ridge * self.prior) / (var + ridge))

    def at(self, n: int) -> float:
        s = self.slope()
        return self.y / self.w + s * (n - self.x / self.w)


class KControl:
    """Chooses k before each step and learns from what each step cost and kept."""

    def __init__(self, fixed: int | None = None, draft_ms: float | None = None,
                 draft_slope_ms: float = 0.0, prior_acceptance: float = 0.75):
        self.fixed = fixed
        self.draft_ms = draft_ms  # one draft step of one token
        self.target = _Fit(draft_slope_ms)
        # decayed counts of kept and refused draft tokens, starting at the prior's odds
        self.kept = 4 * prior_acceptance
        self.refused = 4 * (1 - prior_acceptance)
        self.plain_steps = 0
        self.realized: float | None = None  # ms per emitted token of speculative steps
        self._plain_left = 0  # plain tokens to go before speculation is tried again
        self._last_k = 0
        self._backoff = 0

    @property
    def acceptance(self) -> float:
        return self.kept / (self.kept + self.refused)

    def expected_tokens(self, k: int, a: float | None = None) -> float:
        a = self.acceptance if a is None else a
        return float(k + 1) if a >= 1 else (1 - a ** (k + 1)) / (1 - a)

    def step_ms(self, k: int, a: float | None = None) -> float:
        """Predicted ms per token of a step drafting k (0: plain)."""
        cost = self.target.at(k + 1) + k * (self.draft_ms or 0.0)
        return cost / self.expected_tokens(k, a)

    def best_k(self, limit: int, a: float | None = None) -> int:
        return min(range(1, limit + 1), key=lambda k: self.step_ms(k, a))

    def choose(self, limit: int) -> int:
        """k for the next step, at most `limit` (room left); 0 = a plain step."""
        limit = min(limit, K_MAX)
        if limit < 1 or self.fixed == 0:
            return 0
        if self.fixed is not None:
            return min(self.fixed, limit)
        if self.plain_steps < PLAIN_FIRST or not self.target.known:
            return 0
        if self.draft_ms is None:
            return min(PROBE_K, limit)
        k = self.best_k(limit)
        plain = self.step_ms(0)
        # the model must predict a gain, and what speculative steps really cost per token
        # must not say otherwise (the model misses what it does not see: load, contention)
        if self.step_ms(k) * MARGIN <= plain and (self.realized is None
                                                  or self.realized <= plain):
            self._backoff = 0
            return self._chose(k)
        if self._last_k > 0:  # it stopped paying: plain for a while before trying again
            self._plain_left = BACKOFF[min(self._backoff, len(BACKOFF) - 1)]
            self._backoff += 1
        if self._plain_left > 0:
            self._plain_left -= 1
            return self._chose(0)
        # Try again only if a better acceptance rate could make it pay (on a fast link
        # the draft alone costs about what a plain step does: never).
        if not self.may_speculate():
            return self._chose(0)
        self._plain_left = BACKOFF[min(self._backoff, len(BACKOFF) - 1)]
        self._backoff += 1
        return self._chose(self.best_k(limit, 0.98))

    def _chose(self, k: int) -> int:
        self._last_k = k
        return k

    def note_plain(self, ms: float) -> None:
        self.plain_steps += 1
        self.target.add(1, ms)

    def may_speculate(self) -> bool:
        """Whether a reply could use the draft at all (else it need not even prefill)."""
        if self.fixed is not None:
            return self.fixed > 0
        if self.draft_ms is None or not self.target.known:
            return True
        kk = self.best_k(K_MAX, 0.98)
        return self.step_ms(kk, 0.98) * MARGIN <= self.step_ms(0)

    def note_spec(self, k: int, kept: int, verify_ms: float,
                  draft_ms_per_step: float | None, step_ms: float | None = None) -> None:
        """One speculative step: k drafted, `kept` of them accepted; draft time per draft
        step when it was a plain one (None: a catch-up made it unrepresentative); the
        whole step's time, for the cost per token it really had."""
        self.target.add(k + 1, verify_ms)
        if step_ms is not None:
            per = step_ms / (kept + 1)
            self.realized = per if self.realized is None else 0.7 * self.realized + 0.3 * per
        if draft_ms_per_step is not None:
            self.draft_ms = (draft_ms_per_step if self.draft_ms is None
                             else 0.8 * self.draft_ms + 0.2 * draft_ms_per_step)
        self.kept = self.kept * DECAY + kept
        self.refused = self.refused * DECAY + (1 if kept < k else 0)
