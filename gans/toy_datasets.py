"""Small non-image datasets as numpy arrays, generated or bundled with scikit-learn (no file needed).

    x, y, test = load_toy("moons", n_samples=2000, noise=0.2)    # test: (x_test, y_test) or None

Datasets (`TOY_DATASETS`; their settings are the keyword arguments of the loaders below, and the
conf/dataset/toy/*.yaml presets give the books' values):
- "moons": sklearn's make_moons, 2 features, labels 0/1.
- "iris", "breast_cancer": sklearn's bundled tables (150 × 4, 3 classes; 569 × 30, labels 0/1).
- "diabetes": sklearn's bundled regression table (442 × 10), targets times `target_scale`.
- "cloud3d": a correlated 3-D Gaussian cloud whose targets are its inputs.
- "series": MTF ch. 6's synthetic time series cut into windows, with its own test part (the forecast).

Inputs are float32; labels int64, regression targets float32. `test` is None where the dataset has no
split of its own (the caller holds part of it out).
"""
import inspect

import numpy as np

TOY_DATASETS = ("moons", "iris", "breast_cancer", "diabetes", "cloud3d", "series")


def load_toy(name: str, **options):
    """(x, y, test or None) of the toy dataset `name` with its settings `options`; ValueError in one line
    for an unknown name or setting."""
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; allowed: {', '.join(TOY_DATASETS)}")
    loader = _loaders()[name]
    allowed = list(inspect.signature(loader).parameters)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"dataset.{unknown[0]} is not a setting of the {name} dataset; allowed: "
                         f"{', '.join(allowed) or 'none'}")
    return loader(**options)


def _loaders():
    from sklearn import datasets
    return {"moons": _moons, "iris": _sklearn_bundled(datasets.load_iris),
            "breast_cancer": _sklearn_bundled(datasets.load_breast_cancer),
            "diabetes": _diabetes, "cloud3d": _cloud3d, "series": _series}


def _moons(n_samples=2000, noise=0.2, seed=100):
    from sklearn.datasets import make_moons
    x, y = make_moons(n_samples, noise=noise, random_state=seed)
    return x.astype(np.float32), y.astype(np.int64), None


def _sklearn_bundled(loader):
    def load():
        data = loader()
        return data.data.astype(np.float32), data.target.astype(np.int64), None
    return load


def _diabetes(target_scale=1.0):
    """sklearn's diabetes regression data; `target_scale` rescales the targets (25..346), e.g. to the scale of
    a dataset it stands in for."""
    from sklearn.datasets import load_diabetes
    data = load_diabetes()
    return data.data.astype(np.float32), (data.target * target_scale).astype(np.float32), None


def _cloud3d(n_samples=80, seed=4):
    """A centred 3-D Gaussian cloud with standard deviations 1, 0.5 and 0.1 along random orthogonal axes:
    nearly planar, so a 2-unit linear autoencoder can find the plane (HOML ch. 17; the book does not print
    its generator)."""
    rng = np.random.default_rng(seed)
    axes, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    x = (rng.standard_normal((n_samples, 3)) * [1.0, 0.5, 0.1]) @ axes.T
    x = (x - x.mean(axis=0)).astype(np.float32)
    return x, x.copy(), None


def _series(length=4 * 365 + 1, baseline=10.0, slope=0.05, amplitude=50.0, period=365, noise=10.0, seed=42,
            window=20, split_time=1000, pattern="sin"):
    """MTF ch. 6 (after the TensorFlow time-series course): trend + a yearly pattern + Gaussian noise from
    np.random.RandomState(seed). The pattern rises as sin(2 s) over the first 40 % of the period s (the book's
    notebooks; "cos" is the course's cos(2π s)), then decays as exp(-3 s). Each example is the `window` values
    before a time step, its target the value at that step; targets before `split_time` train, the rest is the
    test part (the book's forecast)."""
    if pattern not in ("cos", "sin"):
        raise ValueError(f"dataset.pattern must be cos or sin, got {pattern!r}")
    time_steps = np.arange(length, dtype=np.float32)
    season = ((time_steps % period) / period)
    rise = np.cos(season * 2 * np.pi) if pattern == "cos" else np.sin(season * 2)
    yearly = np.where(season < 0.4, rise, 1 / np.exp(3 * season))
    series = baseline + slope * time_steps + amplitude * yearly
    series = (series + np.random.RandomState(seed).randn(length) * noise).astype(np.float32)
    x = np.lib.stride_tricks.sliding_window_view(series[:-1], window).copy()
    y = series[window:]
    train = np.arange(window, length) < split_time
    return x[train], y[train], (x[~train], y[~train])
