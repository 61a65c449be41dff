"""Learning curves of many runs: grouped by configuration, smoothed, averaged, drawn with a band.
Used by scripts/plot.py and by the sweep report (core/runtime/sweep.py).

Runs: every directory holding an event file, found recursively under the given paths.

Grouping (one line per configuration): runs whose Hydra overrides (`.hydra/overrides.yaml` in the
run directory or the nearest parent inside the searched path) are equal once `seed=...` and
`resume=...` entries are dropped (also `+seed`, `++seed` and dotted keys ending in `.seed`) form one
group, labelled by those overrides. Without an overrides file a run's group is its directory name
with any `seed<N>` / `seed=<N>` / `seed_<N>` part removed, so `ppo_seed1` and `ppo_seed2` share the
group `ppo`. In the legend the overrides all groups share are written once, in the title.

Smoothing, applied to each run before averaging: 0 < s < 1 is TensorBoard's debiased exponential
moving average with weight s; an integer s >= 1 is a trailing moving average over s points (1
changes nothing); 0 means none. Each group's runs are linearly interpolated onto the union of their
logged steps within the range all of them cover; std is the population std (ddof=0) over runs.
The band is mean ± std, or (band="ci") the 95% confidence interval of the mean (Student's t).
"""
import dataclasses
import math
import re
from pathlib import Path

import numpy as np

from core.runtime.events import find_event_files, read_run

RETURN_TAG = "charts/episodic_return"
GENERATIVE_PREFIXES = ("losses/", "quality/")  # plotted by default when runs have no episodic return
MAX_LEGEND = 12  # more configurations than this: the legend names the best ones by their last value

_SEED_OR_RESUME = re.compile(r"^[+~]*(?:(?:[\w\-]+\.)*seed|resume)=")
_SEED_IN_NAME = re.compile(r"[_\-,.]?seed[=_\-]?\d+", re.IGNORECASE)


@dataclasses.dataclass
class GroupCurve:
    label: str
    runs: list        # run directories
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray   # the band drawn
    high: np.ndarray


def configuration(overrides):
    """The overrides that make a configuration: all but seed and resume, sorted."""
    return sorted(str(entry) for entry in overrides if not _SEED_OR_RESUME.match(str(entry)))


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
            return ",".join(configuration(yaml.safe_load(overrides.read_text()) or [])) or "defaults"
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


def run_series(scalars, tag):
    """(steps, values) of `tag` in a run's scalars, sorted by step; a step logged twice keeps its
    last value (a resumed run), or None when the run lacks the tag."""
    points = scalars.get(tag)
    if not points:
        return None
    by_step = {step: value for step, _, value in points}
    steps = np.array(sorted(by_step), dtype=np.float64)
    return steps, np.array([by_step[s] for s in sorted(by_step)], dtype=np.float64)


def aggregate(label, series, band="std"):
    """Mean and std of a group's runs, `series` a {run_dir: (steps, values)} dict."""
    low = max(steps[0] for steps, _ in series.values())
    high = min(steps[-1] for steps, _ in series.values())
    if low > high:
        raise ValueError(f"runs of group {label!r} share no step range: {sorted(map(str, series))}")
    grid = np.unique(np.concatenate([steps for steps, _ in series.values()]))
    grid = grid[(grid >= low) & (grid <= high)]
    curves = np.stack([np.interp(grid, steps, values) for steps, values in series.values()])
    mean, std = curves.mean(axis=0), curves.std(axis=0)
    if band == "ci":
        n = len(curves)
        if n > 1:
            from scipy.stats import t
            half = t.ppf(0.975, n - 1) * curves.std(axis=0, ddof=1) / math.sqrt(n)
        else:
            half = np.zeros_like(mean)  # one run: no interval to draw
    elif band == "std":
        half = std
    else:
        raise ValueError(f"band must be std or ci, got {band!r}")
    return GroupCurve(label, sorted(series), grid, mean, std, mean - half, mean + half)


def default_tags(tags):
    """The tags plotted when none is asked for: the episodic return, else a generative run's losses
    and quality numbers (without the real images' references, `*_real`: constants of the data, not
    curves of the training; `--tag` still plots them)."""
    if RETURN_TAG in tags:
        return [RETURN_TAG]
    return sorted(tag for tag in tags if tag.startswith(GENERATIVE_PREFIXES) and not tag.endswith("_real"))


def plot_runs(paths, tag=None, out="plot.png", smoothing=0.6, band="std"):
    """Plot `tag` (a tag, a list of tags, or None: `default_tags`) of every run under `paths`, one line
    per group with its band, one panel per tag, into the PNG `out`. Returns {tag: {group label: GroupCurve}}."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs = find_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no TensorBoard event files under {', '.join(map(str, paths))}")
    scalars = {run_dir: read_run(run_dir).scalars for run_dir in sorted(runs)}
    present = sorted({name for values in scalars.values() for name in values})
    tags = [tag] if isinstance(tag, str) else tag or default_tags(present)
    if not tags:
        raise ValueError(f"no run has {RETURN_TAG}, losses/ or quality/ scalars; pick one with --tag: "
                         f"{', '.join(present) or 'none'}")
    panels = {}
    for name in tags:
        groups = {}
        for run_dir, values in scalars.items():
            series = run_series(values, name)
            if series is not None:
                steps, ys = series
                groups.setdefault(group_label(run_dir, runs[run_dir]), {})[run_dir] = (steps, smooth(ys, smoothing))
        if not groups:
            raise ValueError(f"no run has the scalar {name!r}; tags present: {', '.join(present) or 'none'}")
        panels[name] = {label: aggregate(label, series, band) for label, series in sorted(groups.items())}
    _draw(panels, out, smoothing, band)
    return panels


def _shared_overrides(labels):
    """The comma-separated items every label has (they go into the title, not each legend entry)."""
    sets = [set(label.split(",")) for label in labels]
    return sorted(set.intersection(*sets)) if len(sets) > 1 else []


def _draw(panels, out, smoothing, band):
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
    labels = sorted({label for curves in panels.values() for label in curves})
    shared = _shared_overrides(labels)
    short = {label: ",".join(item for item in label.split(",") if item not in shared) or label for label in labels}
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(8 if columns == 1 else 5 * columns + 3, 5 if rows == 1 else 3.5 * rows),
                    layout="constrained")
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    styles = {label: ("-", "--", ":", "-.")[(i // 10) % 4] for i, label in enumerate(labels)}
    handles = {}
    for axes, (tag, curves) in zip(figure.subplots(rows, columns, squeeze=False).flat, panels.items()):
        for label, curve in curves.items():
            line, = axes.plot(curve.steps, curve.mean, color=colors[label], linestyle=styles[label], linewidth=1.2)
            axes.fill_between(curve.steps, curve.low, curve.high, color=colors[label], alpha=0.15, linewidth=0)
            handles.setdefault(label, (line, len(curve.runs)))
        axes.set(xlabel="step", title=tag)
        axes.grid(alpha=0.3)
    for axes in list(figure.axes)[len(panels):]:
        axes.set_visible(False)
    # dozens of configurations: the legend names the best MAX_LEGEND by the first panel's last value
    first = next(iter(panels.values()))
    ranked = sorted(handles, key=lambda label: -first[label].mean[-1] if label in first else math.inf)
    shown = ranked[:MAX_LEGEND]
    entries = [f"{short[label]} (n={handles[label][1]})" for label in shown]
    shown_handles = [handles[label][0] for label in shown]
    if len(ranked) > len(shown):
        from matplotlib.lines import Line2D
        entries.append(f"... {len(ranked) - len(shown)} more (best {MAX_LEGEND} shown)")
        shown_handles.append(Line2D([], [], alpha=0))
    figure.legend(shown_handles, entries, loc="outside right center", fontsize="small")
    what = "mean ± std" if band == "std" else "mean, 95% CI"
    smoothed = f", smoothing {smoothing:g}" if smoothing else ""
    figure.suptitle(f"{','.join(shared) + ': ' if shared else ''}{what} over seeds{smoothed}", fontsize="medium")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
