"""Array backends: numpy on the CPU, cupy on CUDA devices.

A tensor holds one array; its module (numpy or cupy) decides where ops run.
Asking for CUDA without cupy or without a visible GPU is an error, never a silent CPU fallback.
Device "emu" is a strict cupy stand-in on the CPU for tests (core/backend_emu.py), loaded when asked for.
"""
import numpy as np

try:  # cupy is the optional `gpu` extra
    import cupy as _cupy
except Exception:  # ImportError, or a broken CUDA install
    _cupy = None
_emu = None  # core.backend_emu, once device "emu" was asked for


def cupy_available() -> bool:
    """True when cupy imports and sees at least one GPU."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def parse_device(device) -> tuple[str, int]:
    """'cpu' -> ('cpu', 0); 'cuda' / 'cuda:N' -> ('cuda', N); 'emu' (the test stand-in) -> ('emu', 0)."""
    if device is None:
        return "cpu", 0
    text = str(device)
    kind, _, index = text.partition(":")
    if kind in ("cpu", "emu") and not index:
        return kind, 0
    if kind == "cuda" and (not index or index.isdigit()):
        return "cuda", int(index or 0)
    raise ValueError(f"unknown device {text!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def array_module(device):
    """numpy for 'cpu', cupy for 'cuda[:N]' (raises when cupy or a GPU is missing), core.backend_emu for 'emu'."""
    kind, index = parse_device(device)
    if kind == "cpu":
        return np
    if kind == "emu":
        global _emu
        if _emu is None:
            from core import backend_emu
            _emu = backend_emu
        return _emu
    if _cupy is None:
        raise RuntimeError(f"device {device!r} needs cupy, which is not installed: pip install 'rlgen-lab[gpu]' "
                           "(CUDA 12) or 'rlgen-lab[gpu-cuda13]' (CUDA 13)")
    if not cupy_available():
        raise RuntimeError(f"device {device!r} requested but cupy sees no GPU")
    if index >= _cupy.cuda.runtime.getDeviceCount():
        raise RuntimeError(f"device {device!r} requested but only {_cupy.cuda.runtime.getDeviceCount()} GPU(s) are visible")
    return _cupy


def get_array_module(array):
    """The module (numpy or cupy) an array belongs to."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    if _emu is not None and type(array) is _emu.ndarray:
        return _emu
    return np


def device_of(array) -> str:
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return f"cuda:{array.device.id}"
    if _emu is not None and type(array) is _emu.ndarray:
        return "emu"
    return "cpu"


def to_device(array, device):
    """Copy an array to `device` (no copy when it is already there)."""
    kind, index = parse_device(device)
    if kind == "cpu":
        return np.asarray(array) if get_array_module(array) is np else array.get()
    xp = array_module(device)
    with xp.cuda.Device(index):
        return xp.asarray(array)


def scatter_add(xp, target, index, values):
    """target[index] += values with repeated indices accumulating (numpy add.at / cupyx scatter_add)."""
    if xp is np:
        np.add.at(target, index, values)
    else:
        extras(xp).scatter_add(target, index, values)


def extras(xp):
    """cupyx (cupy's extras: scatter_add, scipy.special) for cupy, or the emu stand-in's copy of what the lab uses."""
    if xp is _emu:
        return _emu.cupyx
    import cupyx
    return cupyx


def to_numpy(value):
    """A host numpy array of a core Tensor, cupy array, numpy array or Python value."""
    if hasattr(value, "detach"):  # core Tensor (may require grad)
        value = value.detach().numpy()
    if get_array_module(value) is not np:
        value = value.get()
    return np.asarray(value)


def to_number(value, what="value"):
    """A Python int/float/bool of a single number in any of the forms `to_numpy` accepts."""
    array = to_numpy(value)
    if array.ndim != 0:
        raise ValueError(f"{what} must be a single number, got an array of shape {array.shape}")
    return array.item()
