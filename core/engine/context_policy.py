"""What a conversation longer than the context keeps in the model's view.

`ContextFitter.fit` renders the system prompt plus as many turns as fit in the context,
with room kept for the reply, by the policy the user chose:

* drop-oldest (default): the system prompt and the most recent turns; the oldest turns
  fall out of view.
* drop-middle: the system prompt, the first exchange (it often sets the task) and the most
  recent turns; the turns in between fall out of view.
* stop: nothing is dropped; a conversation that no longer fits is refused with a clear
  `ContextFull` (start a new chat, or pick another policy).

Turns are dropped whole (a cut is always just before a user message), so every chat
template still sees user/assistant turns in order.

KV reuse: the Generator reuses the KV of the longest unchanged prefix. Dropping turns
changes every position after the system prompt, so that part is recomputed; only the
system prompt's KV survives a drop. To pay that rarely, a drop frees `slack` of the
context beyond what the reply needs, and the cut then stays where it is (remembered per
conversation) while later turns fit behind it: those turns extend the cache and
recompute only their own tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.errors import TpiError

DROP_OLDEST, DROP_MIDDLE, STOP = "drop-oldest", "drop-middle", "stop"
OVERFLOW_POLICIES = (DROP_OLDEST, DROP_MIDDLE, STOP)
REMEMBERED_CUTS = 16  # conversations whose cut is remembered (the API serves several)

Render = Callable[[list[dict]], list[int]]  # messages -> prompt ids (the chat template)


class ContextFull(TpiError):
    """The conversation does not fit the context and the policy may not (or cannot) drop."""


@dataclass(frozen=True)
class ContextPolicy:
    """How to fit a long conversation: `overflow` is one of OVERFLOW_POLICIES; after a
    drop, `slack` of the context is left free too, so the next turns need no new drop."""

    overflow: str = DROP_OLDEST
    slack: float = 0.25

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"the context overflow policy is one of "
                             f"{', '.join(OVERFLOW_POLICIES)} (got {self.overflow!r})")
        if not 0 <= self.slack < 1:
            raise ValueError("the slack is a share of the context, from 0 up to 1")


def reply_room(max_new_tokens: int, context: int) -> int:
    """Tokens kept free for the reply: all it may take, but at most a quarter of the
    context (a long max_new_tokens must not push every turn out)."""
    return max(1, min(max_new_tokens, context // 4))


@dataclass
class Fit:
    """The prompt the model gets, and which messages (indices into the conversation's
    messages, system prompt not counted) are out of its view: [lo, hi), empty if none."""

    ids: list[int]
    lo: int = 0
    hi: int = 0

    @property
    def dropped(self) -> int:
        return self.hi - self.lo


class ContextFitter:
    """Fits conversations into the context, remembering where each one was cut."""

    def __init__(self, policy: ContextPolicy | None = None):
        self.policy = policy or ContextPolicy()
        self._cuts: OrderedDict[str, int] = OrderedDict()  # key of messages[:cut+1] -> cut

    def fit(self, render: Render, system: Sequence[dict], messages: Sequence[dict],
            context: int, reserve: int) -> Fit:
        """The prompt ids for `system` + `messages` (ending with the user's turn), at most
        `context - reserve` tokens long, or ContextFull."""
        budget = context - reserve
        system, messages = list(system), list(messages)

        def ids_from(cut: int) -> list[int]:
            return render(system + messages[:lo] + messages[cut:])

        lo = self._kept_head(messages)
        whole = ids_from(lo)
        if len(whole) <= budget:
            return Fit(whole, lo, lo)
        if self.policy.overflow == STOP:
            raise ContextFull(
                f"the conversation ({len(whole)} tokens) and room for the reply ({reserve}) "
                f"no longer fit the context of {context} tokens; start a new chat, or let "
                "the oldest messages drop out of view")
        cuts = [i for i in range(lo + 1, len(messages)) if messages[i].get("role") == "user"]
        cut = self._remembered(messages, cuts)
        if cut is not None:
            ids = ids_from(cut)
            if len(ids) <= budget:
                return Fit(ids, lo, cut)
            cuts = [c for c in cuts if c > cut]
        target = budget - int(self.policy.slack * context)
        chosen = self._first_fitting(cuts, ids_from, target) or \
            self._first_fitting(cuts, ids_from, budget)
        if chosen is None:
            last = ids_from(cuts[-1]) if cuts else whole
            raise ContextFull(
                f"the last message and the system prompt ({len(last)} tokens) leave no room "
                f"for a reply of {reserve} tokens in the context of {context}; shorten them, "
                "or raise the context length")
        cut, ids = chosen
        self._remember(messages, cut)
        return Fit(ids, lo, cut)

    def _kept_head(self, messages: list[dict]) -> int:
        """Messages always kept at the start: none, or the first exchange (drop-middle)."""
        if self.policy.overflow != DROP_MIDDLE:
            return 0
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        return users[1] if len(users) > 1 else 0

    @staticmethod
    def _first_fitting(cuts: list[int], ids_from: Callable[[int], list[int]],
                       limit: int) -> tuple[int, list[int]] | None:
        """The earliest cut whose prompt is at most `limit` tokens (binary search: a later
        cut keeps fewer messages, so its prompt is never longer)."""
        lo, hi, best = 0, len(cuts) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            ids = ids_from(cuts[mid])
            if len(ids) <= limit:
                best, hi = (cuts[mid], ids), mid - 1
            else:
                lo = mid + 1
        return best

    def _remembered(self, messages: list[dict], cuts: list[int]) -> int | None:
        """The cut made earlier in this conversation (the latest that still applies)."""
        for cut in reversed(cuts):
            if _key(messages[:cut + 1]) in self._cuts:
                return cut
        return None

    def _remember(self, messages: list[dict], cut: int) -> None:
        self._cuts[_key(messages[:cut + 1])] = cut
        self._cuts.move_to_end(_key(messages[:cut + 1]))
        while len(self._cuts) > REMEMBERED_CUTS:
            self._cuts.popitem(last=False)


def _key(messages: list[dict]) -> str:
    text = json.dumps([[m.get("role"), m.get("content")] for m in messages])
    return hashlib.sha256(text.encode()).hexdigest()
