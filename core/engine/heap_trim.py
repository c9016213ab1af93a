"""Hand the C heap's freed pages back to the system after each reply.

A prefill of a long prompt (after the context policy drops turns, ~1250 tokens are
recomputed) allocates tens of MB of temporaries: attention scores, dequantized weight
chunks, activations. glibc keeps freed heap memory for reuse, and its mmap threshold
rises after large frees, so each such prefill left the process 30-60 MB larger for a while:
over 40 long turns the CLI's RSS swung between 560 and 628 MB, past the 5% a long chat may
grow. malloc_trim(0) returns the free pages (of every arena) at once; it takes about a
millisecond and runs after the reply's last token, outside every timing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def trim_heap() -> None:
    """Give freed heap pages back to the OS, where the C library can."""
    if _TRIM is not None:
        _TRIM(0)
