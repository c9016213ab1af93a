"""Dropping streamed block files from the OS page cache after use.

With a window smaller than the model, every block is read once per token. When the model
fits in RAM the page cache keeps those reads cheap; on a device that cannot hold it, the
cache only pushes out other programs' memory (and benchmarks need a way to measure the
cold, read-from-disk case). `evict` tells the kernel the file's cached pages are not
needed (posix_fadvise DONTNEED); pages still mapped somewhere stay.
"""

from __future__ import annotations

import os
from pathlib import Path


def evict(path: Path) -> None:
    """Ask the kernel to drop `path`'s cached pages; a no-op where that is not offered
    (posix_fadvise exists on Linux and most Unixes, not on macOS or Windows)."""
    if not hasattr(os, "posix_fadvise"):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
