import os
import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
MNIST_DIR = SHARED / "data"


def pytest_collection_modifyitems(config, items):
    from core.backend import cupy_available
    if cupy_available():
        return
    skip = pytest.mark.skip(reason="needs cupy and a visible GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
