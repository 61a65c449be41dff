"""Shared pieces of the benchmark scripts: timing, thread limits, machine description, and writing a
result table into a named section of docs/benchmarks.md."""
import os
import pathlib
import platform
import re
import timeit

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def single_thread():
    """One BLAS/OpenMP thread for us and for torch, so ratios compare the libraries, not thread counts."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    torch = load_torch()
    if torch is not None:
        torch.set_num_threads(1)
    return torch


def load_torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def best_time(fn, number=None, repeat=7, min_seconds=0.2):
    """Seconds per call: the minimum over `repeat` runs of `number` calls (auto-sized to ~min_seconds)."""
    fn()
    if number is None:
        number = 1
        while (elapsed := timeit.timeit(fn, number=number)) < 0.05:
            number *= 2
        number = max(1, int(number * min_seconds / elapsed))
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    torch = load_torch()
    peers = f", torch {torch.__version__}" if torch is not None else ""
    load = f", load average {os.getloadavg()[0]:.1f} at the start" if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {numpy.__version__}{peers}{load}"


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def write_section(name, body):
    """Replace (or append) the section `<!-- name -->...<!-- /name -->` of docs/benchmarks.md."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"<!-- {name} -->\n{body.rstrip()}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
