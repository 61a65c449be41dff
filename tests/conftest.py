import os
import pathlib
import socket

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
MNIST_DIR = SHARED / "data"


def closed_port() -> int:
    """A localhost port nothing listens on (the OS's free one, closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The tests and the runs they start read the data from ../shared/data (the MNIST test set) when it is there,
# and never download: a missing file fails at once against a mirror that refuses the connection.
if MNIST_DIR.is_dir():
    os.environ["LAB_DATA_DIR"] = str(MNIST_DIR)
os.environ["LAB_DATA_MIRROR"] = f"http://127.0.0.1:{closed_port()}/"


@pytest.fixture
def refused_url():
    """An http URL on localhost that refuses connections."""
    return f"http://127.0.0.1:{closed_port()}/"


@pytest.fixture(scope="session")
def gpu_device():
    """The device of the `gpu` tests: $LAB_GPU_DEVICE when set (scripts/gpu_check.sh sets cuda, so that a GPU cupy
    cannot use fails instead of being replaced), else "cuda" where cupy sees a GPU, else "emu", the strict cupy
    stand-in on the CPU (core/backend_emu.py), so that CI runs them too and catches host/device slips."""
    from core.backend import array_module, cupy_available
    device = os.environ.get("LAB_GPU_DEVICE") or ("cuda" if cupy_available() else "emu")
    array_module(device)  # the clear error now, when that device cannot be used
    return device


@pytest.fixture(autouse=True)
def _seed():
    import core
    core.manual_seed(0)
    yield


@pytest.fixture
def mnist_root():
    if not (MNIST_DIR / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST test set not found under {MNIST_DIR}")
    return str(MNIST_DIR)


os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: threads only add contention
