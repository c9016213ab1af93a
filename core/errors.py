"""Errors a user can act on.

Every failure that reaches a user is one of these, carrying a single sentence that says
what went wrong and what to do. The CLI prints `str(err)` and exits non-zero; the GUI
shows it in the chat. Tracebacks are for bugs, not for bad input.
"""


class TpiError(Exception):
    """Base class: the message is meant for the user, as is."""


class ModelError(TpiError):
    """A model dir or file is missing, corrupt or of an unsupported architecture."""


class ShardError(TpiError):
    """A shard file is missing, truncated or does not match its manifest."""


class ProtocolError(TpiError):
    """A frame on the wire is malformed, too large or of an unknown kind."""


class PeerError(TpiError):
    """A peer rank died, timed out or refused us; `ranks` names the ranks to blame, when
    known (a cluster leaves their devices out of the next plan)."""

    def __init__(self, message: str = "", ranks: tuple[int, ...] | list[int] = ()):
        super().__init__(message)
        self.ranks = tuple(ranks)
