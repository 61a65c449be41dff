"""core/memory.py: with `core` imported, a large numpy temporary comes from the heap and its memory stays
there once freed, so the next one reuses those pages instead of a fresh mapping."""
import ctypes
import os
import platform

import numpy as np
import pytest

import core  # noqa: F401  (importing core applies the setting)
from core.memory import USER_TUNING


class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2 (2.33+)
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def mallinfo():
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc 2.33+ for mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.skipif(any(name in os.environ for name in USER_TUNING), reason="the user tunes malloc")
def test_a_freed_large_array_stays_in_the_heap_for_the_next_one():
    size = 64 << 20  # far above glibc's largest mmap threshold (32 MiB)
    before = mallinfo()
    array = np.ones(size // 4, np.float32)
    during = mallinfo()
    assert during.hblkhd == before.hblkhd  # not a mapping of its own
    assert during.uordblks >= before.uordblks + size  # the heap holds it
    del array
    after = mallinfo()
    assert after.fordblks >= size and after.arena == during.arena  # freed, kept, not handed back
    again = np.ones(size // 4, np.float32)
    assert mallinfo().arena == during.arena  # the same heap pages serve the next one
    del again
