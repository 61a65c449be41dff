"""Array-module selection for the native environments (stand-in until core's backend exists).

"cpu" gives numpy; "cuda" / "cuda:N" gives cupy. A cuda request without cupy or without a
visible GPU is an error, never a silent fallback to numpy.
"""

import contextlib
import re

import numpy as np

_DEVICE_PATTERN = re.compile(r"cpu|cuda(?::(\d+))?")


def _parse(device: str) -> int | None:
    """GPU index for a cuda device string, None for "cpu"."""
    match = _DEVICE_PATTERN.fullmatch(device) if isinstance(device, str) else None
    if match is None:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device == "cpu":
        return None
    return int(match.group(1) or 0)


def _cupy_for(device: str, index: int):
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError(
            f"device {device!r} needs cupy, which is not installed (pip install 'rlgen-lab[gpu]')"
        ) from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # cupy raises CUDARuntimeError when no driver is present
        raise RuntimeError(f"device {device!r} requested but cupy sees no GPU ({error})") from error
    if index >= count:
        raise RuntimeError(f"device {device!r} requested but cupy sees only {count} GPU(s)")
    return cupy


def array_module(device: str = "cpu"):
    """numpy for "cpu"; cupy for "cuda" / "cuda:N" (checked to be importable and to see that GPU)."""
    index = _parse(device)
    return np if index is None else _cupy_for(device, index)


def device_scope(device: str = "cpu"):
    """Reusable context manager that makes `device` current for cupy work (a no-op for "cpu")."""
    index = _parse(device)
    if index is None:
        return contextlib.nullcontext()
    return _cupy_for(device, index).cuda.Device(index)
