"""Large numpy temporaries reuse the process's memory instead of being mapped afresh every step.

glibc gives every allocation above its mmap threshold (128 KiB, growing to at most 32 MiB) a mapping of
its own and unmaps it when freed, so the big temporaries of a conv step (the im2col columns of the TF
DCGAN tutorial's generator are 160 MB at batch 256) are faulted in again, and zeroed by the kernel, at
every step. With transparent huge pages on, that was 0.4-0.8 s of system time per DCGAN update at batch
256, a quarter of its CPU time (PyTorch's direct convolutions have no such buffers). Serving every
allocation from the heap and trimming the heap only above TRIM_THRESHOLD lets the next step reuse the
same pages. The price: a process keeps the memory of its peak (up to that threshold), as PyTorch's
caching allocators do.

Done once when `core` is imported, on glibc only, and not when the user tunes malloc through glibc's
own environment variables (MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_).
"""
import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (glibc's malloc.h)
TRIM_THRESHOLD = 1 << 30  # free memory at the top of the heap beyond this goes back to the system
USER_TUNING = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Ask glibc to serve large allocations from the heap and keep freed memory; True when it did."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or any(v in os.environ for v in USER_TUNING):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
