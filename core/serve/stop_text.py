"""A reply's text cut at its first stop string, streamed without ever showing a stop.

`feed(piece)` returns what may be shown now: the text so far less any tail that could still
grow into a stop string (held back until the next piece settles it). Once a stop string
appears, the text ends just before it and `hit` is true.
"""

from __future__ import annotations


class StopText:
    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self.stops), default=0)
        self.text = ""  # everything kept so far (cut at the stop once hit)
        self._shown = 0
        self.hit = False

    def feed(self, piece: str) -> str:
        if self.hit or not piece:
            return ""
        start = max(0, len(self.text) - self._longest + 1)  # a stop may begin in the tail
        self.text += piece
        found = [i for s in self.stops if (i := self.text.find(s, start)) >= 0]
        if found:
            self.hit = True
            self.text = self.text[:min(found)]
            return self._show(len(self.text))
        return self._show(len(self.text) - self._held())

    def finish(self) -> str:
        """The held-back tail, at the end of the reply (it did not become a stop)."""
        return self._show(len(self.text))

    def _held(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        for n in range(min(self._longest - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0

    def _show(self, upto: int) -> str:
        upto = max(upto, self._shown)
        out = self.text[self._shown:upto]
        self._shown = upto
        return out
