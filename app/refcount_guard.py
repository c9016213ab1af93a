"""Keeps None, True and False alive however many references PySide6 drops (Python 3.11).

PySide6 6.12.0 returns None from every void method (setText, setFixedHeight, a
QTimer's start, ...) and for a null pointer (QTextBlock.textList() of a plain
paragraph), and True from Signal.emit, without the reference a caller owns: its abi3
wheels were built with Py_RETURN_NONE / Py_RETURN_TRUE macros that treat those objects
as immortal (CPython gh-134989). They are immortal only from Python 3.12 on (PEP 683);
on 3.11 every such call takes one reference away for good. 6.11.3 does not do this.

The chat view streams a reply through ~6 such calls a token (its re-render of the
reply's paragraphs, the token signal), so after a quarter of an hour of long replies
None's count reached 0 and the process aborted ("none_dealloc: deallocating None").
The missing references cannot be added inside PySide's compiled wrappers, and nearly
every Qt call goes through them, so instead each of the three objects gets a count no
session can use up, as Python 3.12 does: 2**60 more references, which last 36,000
years at a million dropped a second.

TPI_CHAT_REFCOUNT_GUARD=0 turns it off (tests/app/test_refcount_guard.py shows the
crash that way).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

ENV_VAR = "TPI_CHAT_REFCOUNT_GUARD"
HEADROOM = 1 << 60  # far from Py_ssize_t's 2**63: increfs have room too
ADDED: dict[str, int] = {}  # repr -> references added (tests subtract them)


def protect_singletons() -> dict[str, int]:
    """Give None, True and False HEADROOM more references (once; Python < 3.12 only).

    Returns what this call added per object's repr (also kept in ADDED)."""
    if sys.version_info >= (3, 12) or os.environ.get(ENV_VAR, "1") == "0" or ADDED:
        return {}  # immortal there already / turned off / done
    if hasattr(sys, "getobjects"):  # a Py_TRACE_REFS build: ob_refcnt is not at offset 0
        log.warning("refcount guard skipped: a trace-refs build of Python")
        return {}
    added: dict[str, int] = {}
    for obj in (None, True, False):
        cell = ctypes.c_ssize_t.from_address(id(obj))  # PyObject.ob_refcnt
        if not _layout_matches(cell, obj):
            log.warning("refcount guard skipped: %r's count is not where it was expected", obj)
            break
        # A thread that takes or drops a reference between this read and write would
        # have that one change lost: a few counts out of 2**60.
        cell.value += HEADROOM
        added[repr(obj)] = HEADROOM
    ADDED.update(added)
    return added


def _layout_matches(cell: ctypes.c_ssize_t, obj: object) -> bool:
    """Is `cell` obj's reference count? (getrefcount also counts its own argument; another
    thread may change the count in between, hence the tries.)"""
    return any(cell.value == sys.getrefcount(obj) - 1 for _ in range(5))
