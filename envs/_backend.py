"""Array-module selection for the native environments: a thin layer over `core.backend`.

"cpu" gives numpy; "cuda" / "cuda:N" gives cupy. A cuda request without cupy or without a
visible GPU is an error (raised by core.backend), never a silent fallback to numpy.
"""

import contextlib

from core import backend


def array_module(device: str = "cpu"):
    """numpy for "cpu"; cupy for "cuda" / "cuda:N" (checked to be importable and to see that GPU)."""
    return backend.array_module(device)


def device_scope(device: str = "cpu"):
    """Reusable context manager that makes `device` current for cupy work (a no-op for "cpu")."""
    kind, index = backend.parse_device(device)
    if kind == "cpu":
        return contextlib.nullcontext()
    return array_module(device).cuda.Device(index)
