"""trim_heap hands freed heap pages back: memory a prefill freed does not stay resident."""

from __future__ import annotations

import ctypes
import sys

import psutil
import pytest

from core.engine.heap_trim import trim_heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def test_freed_heap_pages_go_back_to_the_system():
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    me = psutil.Process()
    # 64 KB blocks: under glibc's mmap threshold, so they come from the heap; the last one
    # stays allocated, so free() alone cannot shrink the heap from its top
    blocks = [libc.malloc(64 << 10) for _ in range(3200)]  # 200 MB
    for b in blocks:
        ctypes.memset(b, 1, 64 << 10)
    for b in blocks[:-1]:
        libc.free(b)
    before = me.memory_info().rss
    trim_heap()
    after = me.memory_info().rss
    libc.free(blocks[-1])
    assert before - after > 150 << 20, (before >> 20, after >> 20)
