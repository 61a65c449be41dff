"""Plot one TensorBoard scalar over runs: mean ± std across seeds, one curve per configuration.

    python scripts/plot.py multirun/2024-05-01/12-00-00 --tag charts/episodic_return --smoothing 0.6

Runs: every directory holding an event file, found recursively under the given paths.

Grouping: runs whose Hydra overrides (`.hydra/overrides.yaml` in the run directory or the
nearest parent inside the searched path) are equal once `seed=...` entries are dropped (also
`+seed`, `++seed` and dotted keys ending in `.seed`) form one group, labelled by those overrides.
Without an overrides file a run's group is its directory name with any `seed<N>` / `seed=<N>` /
`seed_<N>` part removed, so `ppo_seed1` and `ppo_seed2` share the group `ppo`.

Smoothing, applied to each run before averaging: 0 < s < 1 is TensorBoard's debiased
exponential moving average with weight s; an integer s >= 1 is a trailing moving average over s
points (1 changes nothing); 0 means none. Each group's runs are linearly interpolated onto the union of their logged
steps within the range all of them cover; std is the population std (ddof=0) over runs.
"""
import argparse
import dataclasses
import re
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as `python scripts/plot.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.runtime.events import find_event_files, read_run  # noqa: E402

_SEED_OVERRIDE = re.compile(r"^[+~]*(?:[\w\-]+\.)*seed=")
_SEED_IN_NAME = re.compile(r"[_\-,.]?seed[=_\-]?\d+", re.IGNORECASE)


@dataclasses.dataclass
class GroupCurve:
    label: str
    runs: list        # run directories
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def find_runs(paths):
    """Run directories (those directly holding event files) under `paths`, with the searched root
    each was found under."""
    runs = {}
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"no run directory at {root}")
        for file in find_event_files(root):
            runs.setdefault(file.parent, root if root.is_dir() else file.parent)
    return runs


def group_label(run_dir, root=None):
    """The group a run belongs to (see the module docstring for the rule)."""
    run_dir = Path(run_dir)
    for directory in [run_dir, *run_dir.parents]:
        overrides = directory / ".hydra" / "overrides.yaml"
        if overrides.is_file():
            import yaml
            entries = yaml.safe_load(overrides.read_text()) or []
            kept = sorted(str(entry) for entry in entries if not _SEED_OVERRIDE.match(str(entry)))
            return ",".join(kept) or "defaults"
        if root is None or directory == Path(root):
            break
    return _SEED_IN_NAME.sub("", run_dir.name).strip("_-,.") or run_dir.name


def smooth(values, smoothing):
    """Smooth a 1-d series (see the module docstring)."""
    values = np.asarray(values, dtype=np.float64)
    if not smoothing:
        return values
    if 0 < smoothing < 1:  # TensorBoard: EMA from zero, divided by the weight it has accumulated
        out, last, count = np.empty_like(values), 0.0, 0
        for i, value in enumerate(values):
            if np.isfinite(value):
                last = last * smoothing + (1 - smoothing) * value
                count += 1
                value = last / (1 - smoothing ** count)
            out[i] = value
        return out
    if smoothing >= 1 and float(smoothing).is_integer():
        window = int(smoothing)
        sums = np.concatenate([[0.0], np.cumsum(values)])
        ends = np.arange(1, len(values) + 1)
        starts = np.maximum(ends - window, 0)
        return (sums[ends] - sums[starts]) / (ends - starts)
    raise ValueError(f"smoothing must be 0, an EMA weight in (0, 1) or an integer window >= 1, got {smoothing}")


def run_series(run_dir, tag):
    """(steps, values) of `tag` in a run, sorted by step; a step logged twice keeps its last value
    (a resumed run), or None when the run lacks the tag."""
    points = read_run(run_dir).scalars.get(tag)
    if not points:
        return None
    by_step = {step: value for step, _, value in points}
    steps = np.array(sorted(by_step), dtype=np.float64)
    return steps, np.array([by_step[s] for s in sorted(by_step)], dtype=np.float64)


def aggregate(label, series):
    """Mean and std of a group's runs, `series` a {run_dir: (steps, values)} dict."""
    low = max(steps[0] for steps, _ in series.values())
    high = min(steps[-1] for steps, _ in series.values())
    if low > high:
        raise ValueError(f"runs of group {label!r} share no step range: {sorted(map(str, series))}")
    grid = np.unique(np.concatenate([steps for steps, _ in series.values()]))
    grid = grid[(grid >= low) & (grid <= high)]
    curves = np.stack([np.interp(grid, steps, values) for steps, values in series.values()])
    return GroupCurve(label, sorted(series), grid, curves.mean(axis=0), curves.std(axis=0))


def plot_runs(paths, tag="charts/episodic_return", out="plot.png", smoothing=0.0):
    """Plot `tag` of every run under `paths` as mean ± std per group into the PNG `out`.
    Returns {group label: GroupCurve}."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs = find_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no TensorBoard event files under {', '.join(map(str, paths))}")
    groups = {}
    for run_dir, root in sorted(runs.items()):
        series = run_series(run_dir, tag)
        if series is not None:
            steps, values = series
            groups.setdefault(group_label(run_dir, root), {})[run_dir] = (steps, smooth(values, smoothing))
    if not groups:
        tags = sorted({t for run_dir in runs for t in read_run(run_dir).scalars})
        raise ValueError(f"no run has the scalar {tag!r}; tags present: {', '.join(tags) or 'none'}")
    curves = {label: aggregate(label, series) for label, series in sorted(groups.items())}
    _draw(curves, tag, out)
    return curves


def _draw(curves, tag, out):
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    for curve in curves.values():
        line, = axes.plot(curve.steps, curve.mean, label=f"{curve.label} (n={len(curve.runs)})")
        axes.fill_between(curve.steps, curve.mean - curve.std, curve.mean + curve.std,
                          color=line.get_color(), alpha=0.2)
    axes.set(xlabel="step", ylabel=tag, title=tag)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run or multirun directories (searched recursively)")
    parser.add_argument("--tag", default="charts/episodic_return", help="scalar tag to plot")
    parser.add_argument("--smoothing", type=float, default=0.0,
                        help="EMA weight in (0, 1) or an integer moving-average window; 0 = none")
    parser.add_argument("--out", default=None, help="PNG to write (default: <first path>/<tag>.png)")
    args = parser.parse_args(argv)
    out = args.out or str(Path(args.paths[0]) / (args.tag.replace("/", "_") + ".png"))
    try:
        curves = plot_runs(args.paths, args.tag, out, args.smoothing)
    except (FileNotFoundError, ValueError) as e:  # no runs, no such tag, a corrupt event file: one line
        sys.exit(f"error: {str(e).splitlines()[0]}")
    for curve in curves.values():
        print(f"{curve.label}: {len(curve.runs)} run(s), last step {curve.steps[-1]:g}: "
              f"{curve.mean[-1]:.4g} ± {curve.std[-1]:.4g}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
