"""Reproduce the books' chapter experiments: run presets over seeds, compare with the books, write a report.

    python scripts/reproduce.py --all --seeds 3                   # every preset that can run here
    python scripts/reproduce.py 'homl18-*' mtf8-dqn-cartpole --seeds 5 --budget-scale 0.2 --jobs 2
    python scripts/reproduce.py --kind rl --dry-run               # list what would run, and what would not
    python scripts/reproduce.py --report-only                     # rebuild the markdown from results.json
    python scripts/reproduce.py 'mtf10-*' --seeds 3 --write       # also update docs/reproduction.md
    python scripts/reproduce.py --report-only --write             # publish ./reproduction into docs/

Presets are `conf/experiment/<id>.yaml`; their `meta:` node (see conf/experiment/README.md) says what
the book reports, which metric to compare and how, and which config keys hold the budget. Each
selected preset runs once per seed as a subprocess `scripts/train.py experiment=<id> seed=<k>
hydra.run.dir=<runs-dir>/<id>/seed<k>` (plus the scaled budget keys). A run whose directory
already holds a completed metrics.json made with the same overrides is not run again, so an
interrupted reproduction continues where it stopped; an unfinished run starts over.

Results go to a results directory (`--out`, default `./reproduction` under the current directory):
`results.json` (one entry per id, replaced when the id is run again, others kept), learning curves
`<id>.png` (scripts/plot.py) and the markdown report `reproduction.md`, regenerated from results.json
each time. The tracked report (`docs/reproduction.md`, `docs/reproduction/results.json` and its PNGs)
changes only with `--write`, as with the benchmark scripts: then this run's entries (with
`--report-only`, every entry of the results directory) are merged into it and it is regenerated, so
runs of different presets by different people merge into one report. Presets that were not run are
listed with the reason (a missing optional dependency, the preset's own `skip` reason, or not run yet).

GAN and VAE presets are also judged on their samples (see QUALITY_RULES): their runs' metrics.json
holds the sample-quality score of the end of training, and a verdict of "reproduced" or "better" on
the preset's own metric stands only when the samples pass the quality bar.
"""
import argparse
import collections
import datetime
import fcntl
import fnmatch
import hashlib
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as `python scripts/reproduce.py`: make the repository importable
    sys.path.insert(0, str(ROOT))

from gans.quality import QUALITY_BAR, describe_bar, quality_bar  # noqa: E402

PRESET_DIR = ROOT / "conf" / "experiment"
TRAIN = ROOT / "scripts" / "train.py"
KINDS = {"rl": ("rl", "rl-tab", "rl-fix"), "gen": ("ae", "vae", "gan"), "sup": ("sup", "opt")}
SECTIONS = {"rl": "Reinforcement learning", "gen": "Generative models", "sup": "Supervised, regression, optimisation"}
COMPARES = ("higher", "lower", "approx", "none")
REQUIRED_META = ("id", "book", "chapter", "kind", "reported", "metric", "compare")
DEFAULT_REL_TOLERANCE = 0.10   # higher / lower: the band around the book's number is 10 % of it ...
DEFAULT_APPROX_TOLERANCE = 1e-6  # ... and approx means equal up to this, unless the preset says otherwise
STAMP = "reproduce.json"
DOCS_REPORT = ROOT / "docs" / "reproduction.md"
QUALITY_KINDS = ("gan", "vae")

VERDICT_RULES = f"""\
Each preset names one metric of its runs (`meta.metric`: a metrics.json key, or a TensorBoard scalar
summarised over the run such as the maximum or the mean of the last N episode returns), the book's
number for it (`meta.reported_value`) and how to compare (`meta.compare`). Over the seeds the lab's
result is mean ± std (population std); the band is `meta.tolerance` when the preset gives one,
else {DEFAULT_REL_TOLERANCE:.0%} of |book value| for `higher`/`lower` and {DEFAULT_APPROX_TOLERANCE:g} for `approx`,
widened to the std over seeds when that is larger.

- **reproduced**: the lab's mean lies within the band around the book's number (for a list of
  values: every element within the band).
- **better** / **worse**: outside the band, on the better / worse side (`higher`: a higher mean is
  better; `lower`: a lower one). For `approx` (exact values such as fixtures and tabular results)
  any miss is **worse**.
- **not comparable**: the book gives no number (curves, images, "converges"), or the lab's measure
  cannot be set against it; the reason says which.
- **failed**: the runs did not finish (the reason quotes the error).

A budget scale other than 1 is shown next to the result: a shortened run is still judged, but read
its verdict with the scale in mind. Timings are this machine's and are not compared with the books'."""

QUALITY_RULES = f"""\
GAN and VAE presets are also judged on their samples, whatever their metric: a loss value near the
book's says nothing about images that may be noise. Each run records at its end the sample-quality
metrics of gans/quality.py in metrics.json, measured on the lab's own small classifier (not Inception
IS/FID) against the run's own real images (for `dataset.classes=[7]`, the sevens). The quality bar is
the lab's one bar for "recognisable samples" (`gans.quality.quality_bar`, also the one of
docs/running.md and of `evaluate.py <run> samples=N`), on the means over seeds:
{describe_bar()}. The relative Fréchet distance is the distance over tr(Σ_real), which is what a
generator whose every sample had exactly the real images' mean features would score: 1 on this scale,
so no part of the bar depends on the classifier's scale; a preset's
`meta.quality_bar` may set any part ({", ".join(f"`{key}`" for key in QUALITY_BAR)}).

What reference samples score (2,000 against the real images: half the test file's, or half its 1,028 sevens;
the presets' MNIST classifier):

| samples | all ten digits: score (real 8.45), classes, rel. FD (FD) | sevens only: score (real 1.12), classes, rel. FD (FD) | bar |
|---|---|---|---|
| real images (the other half of the test file's) | 8.37, 10 of 10, 0.003 (2.0) | 1.12, 1 of 1, 0.012 (2.3) | pass |
| uniform noise | 1.15, 3 of 10, 1.13 (673) | 1.15, 0 of 1, 4.93 (947) | fail |
| grey noise (0.5 ± 0.05) | 1.00, 1 of 10, 1.48 (876) | 1.00, 0 of 1, 5.32 (1,023) | fail |
| the mean image, repeated | 1.00, 1 of 10, 1.67 (989) | 1.00, 1 of 1, 1.99 (383) | fail |
| one class (real 1s) | 1.11, 1 of 10, 1.22 (726) | 1.11, 0 of 1, 4.92 (945) | fail |
| one real image, repeated | 1.00, 1 of 10, 2.08 (1,236) | 1.00, 1 of 1, 1.86 (357) | fail |

On a single class the score cannot tell samples apart (the real sevens score about 1, as does noise):
there the classes covered (samples that look like another class cover none of the run's) and the
relative Fréchet distance (a generator stuck on one image, or on the mean) do the work. The VAE
presets' samples had Fréchet distances of 75-125 on this classifier (tr(Σ_real) about 590), about
0.13-0.21 relative.

- A verdict of **reproduced** or **better** on the preset's metric stands only when the samples pass
  the bar; otherwise the preset is **worse**, and the reason says which part of the bar failed.
- Rows whose runs recorded their samples before this bar (a Fréchet distance and class entropies, no
  score) are not judged on a guess: a **reproduced** or **better** on the metric becomes **not
  comparable**, and the reason says "judged before the quality bar: rerun it".
- Other verdicts keep their word, and their reason says whether the samples pass."""


class ReproduceError(Exception):
    """Bad input to the script: one line, exit status 2."""


# ----- presets -----
def load_presets(preset_dir=PRESET_DIR):
    """{id: meta} for every preset file, `meta` completed with defaults (and `file`)."""
    presets = {}
    for path in sorted(Path(preset_dir).glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        meta = dict(data.get("meta") or {})
        meta.setdefault("id", path.stem)
        for key, default in (("book", "?"), ("chapter", "?"), ("kind", "?"), ("reported", "not given"),
                             ("reported_value", None), ("metric", None), ("compare", "none"), ("tolerance", None),
                             ("seeds", None), ("budget_keys", []), ("budget_note", None), ("requires", []),
                             ("skip", None), ("curve", None), ("curve_smoothing", 0), ("substitute", None),
                             ("quality_bar", None)):
            meta.setdefault(key, default)
        meta["file"] = str(path)
        presets[path.stem] = meta
    return presets


def kind_group(kind):
    return next((group for group, kinds in KINDS.items() if kind in kinds), "other")


def select(presets, patterns, all_presets=False, kind=None):
    """Ids chosen by exact ids / shell globs (or all), restricted to a kind group; sorted."""
    if not patterns and not all_presets:
        raise ReproduceError("name presets (ids or globs such as 'homl18-*') or pass --all")
    chosen = set(presets) if all_presets else set()
    for pattern in patterns:
        matches = fnmatch.filter(presets, pattern)
        if not matches:
            raise ReproduceError(f"no preset matches {pattern!r}; presets: {', '.join(sorted(presets)) or 'none'}")
        chosen.update(matches)
    if kind is not None:
        chosen = {i for i in chosen if kind_group(presets[i]["kind"]) == kind}
    return sorted(chosen)


def unavailable(meta, named=False, include_skipped=False):
    """Why a preset cannot or should not run here, or None. A preset's own `skip` reason is waived
    when it was named explicitly (not through a glob or --all) or with --include-skipped."""
    missing = [m for m in meta["requires"] or [] if importlib.util.find_spec(m) is None]
    if missing:
        return f"needs {', '.join(missing)} (not installed here)"
    if meta["skip"] and not (named or include_skipped):
        return str(meta["skip"])
    return None


def budget_overrides(preset_id, meta, scale):
    """Overrides multiplying each of the preset's budget keys by `scale` (ints stay ints, >= 1)."""
    if scale == 1 or not meta["budget_keys"]:
        return []
    from omegaconf import OmegaConf
    cfg = compose_preset(preset_id)
    overrides = []
    for key in meta["budget_keys"]:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ReproduceError(f"{preset_id}: budget key {key!r} holds {value!r}, not a number")
        scaled = max(1, round(value * scale)) if isinstance(value, int) else value * scale
        overrides.append(f"{key}={scaled}")
    return overrides


# ----- running -----
def run_dir_of(runs_dir, preset_id, seed):
    return Path(runs_dir) / preset_id / f"seed{seed}"


def compose_preset(preset_id, overrides=()):
    """The run config Hydra composes for `experiment=<preset_id>` (without the hydra node)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from scripts.train import CONF_DIR, register_configs
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name="config", overrides=[f"experiment={preset_id}", *overrides])


def preset_digest(preset_id, overrides=()):
    """sha256 of the composed config: a run made before the preset or any config group it pulls in
    changed (a model group's default, a dataset's parameters) is not reused. `meta` is left out: it
    says how to report a run (book value, tolerance), which is recomputed from the reused runs."""
    from omegaconf import OmegaConf, open_dict
    cfg = compose_preset(preset_id, overrides)
    with open_dict(cfg):
        cfg.pop("meta", None)
    return hashlib.sha256(OmegaConf.to_yaml(cfg).encode()).hexdigest()


def is_done(run_dir, overrides, digest):
    """True when `run_dir` holds a completed run made with exactly these overrides, from the
    preset whose digest is `digest`."""
    stamp, metrics = run_dir / STAMP, run_dir / "metrics.json"
    if not (stamp.is_file() and metrics.is_file()):
        return False
    try:
        recorded = json.loads(stamp.read_text())
        same = recorded["overrides"] == overrides and recorded.get("preset_sha256") == digest
        return same and json.loads(metrics.read_text()).get("status") == "completed"
    except (ValueError, KeyError):
        return False


def run_one(run_dir, overrides, timeout=None, threads=None):
    """Run train.py into `run_dir` (fresh) and return {"status", "wall_s", "error"}; the console
    output is kept in run_dir/reproduce.log."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / STAMP).write_text(json.dumps({"overrides": overrides}, indent=1) + "\n")
    command = [sys.executable, str(TRAIN), *overrides, f"hydra.run.dir={run_dir}"]
    env = dict(os.environ)
    if threads:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(name, str(threads))
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        output, returncode = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:  # its output comes back as bytes whatever `text` says
        output = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        output, returncode = output + f"\ntimed out after {timeout} s", None
    wall = time.perf_counter() - start
    (run_dir / "reproduce.log").write_text(" ".join(command) + "\n" + output)
    metrics = run_dir / "metrics.json"
    status = json.loads(metrics.read_text()).get("status") if metrics.is_file() else None
    if returncode == 0 and status == "completed":
        return {"status": "completed", "wall_s": wall, "error": None}
    if returncode == 0:  # stopped early (Ctrl-C / SIGTERM): metrics.json says "interrupted"
        return {"status": "failed", "wall_s": wall, "error": f"the run ended {status or 'without metrics.json'}"}
    lines = [line for line in output.strip().splitlines() if line.strip()]
    error = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "no output")
    return {"status": "failed", "wall_s": wall, "error": error.strip()[:300]}


# ----- metrics and verdicts -----
def parse_metric(spec):
    """(key, indices, summary): 'tabular/Q[8][3]' -> ('tabular/Q', [8, 3], None);
    'charts/episodic_return@last10' -> ('charts/episodic_return', [], 'last10')."""
    key, _, summary = spec.partition("@")
    indices = []
    while key.endswith("]"):
        key, _, index = key[:-1].rpartition("[")
        indices.insert(0, int(index))
    return key, indices, summary or None


def summarize_series(values, summary):
    if summary in ("max", "min", "mean"):
        return float(getattr(np, summary)(values))
    if summary.startswith("last"):
        return float(np.mean(values[-int(summary[4:] or 1):]))
    raise ReproduceError(f"unknown metric summary @{summary}; allowed: @max, @min, @mean, @last, @lastN")


def metric_value(run_dir, spec):
    """The value `spec` names in a finished run (number or nested list), or None when absent."""
    key, indices, summary = parse_metric(spec)
    if summary is not None:
        from core.runtime.events import read_run
        points = read_run(run_dir).scalars.get(key)
        return summarize_series([v for _, _, v in points], summary) if points else None
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    value = metrics.get(key)
    for index in indices:
        if value is None:
            break
        value = value[index]
    return value


def flatten(value):
    """(1-D float array, layout) of a number or a nested list, ragged ones too ([[4, 2, 3], [4, 2, 3, 2]]);
    two values can be compared element by element when their layouts are equal."""
    if isinstance(value, (list, tuple)):
        parts = [flatten(v) for v in value]
        flat = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
        return flat, [p[1] for p in parts]
    return np.array([float(value)]), None


def unflatten(flat, layout):
    """The nested list (or number) of `layout` filled from `flat`, inverse of `flatten`."""
    values = iter(np.asarray(flat, dtype=float).tolist())

    def build(shape):
        return next(values) if shape is None else [build(s) for s in shape]
    return build(layout)


def _band(meta, reference, spread):
    tolerance = meta["tolerance"]
    if tolerance is None:
        tolerance = DEFAULT_APPROX_TOLERANCE if meta["compare"] == "approx" else DEFAULT_REL_TOLERANCE * np.abs(reference)
    return np.maximum(tolerance, spread)


def verdict(meta, mean, std):
    """(verdict, reason) for the lab's mean ± std against the book (see VERDICT_RULES)."""
    reference = meta["reported_value"]
    if meta["compare"] == "none" or reference is None:
        return "not comparable", "the book gives no number to compare with"
    if mean is None:
        return "not comparable", f"the runs produced no {meta['metric']}"
    (lab, layout), (book, book_layout) = flatten(mean), flatten(reference)
    if layout != book_layout:
        return "not comparable", f"the lab's value {_fmt(mean)} is not laid out as the book's {_fmt(reference)}"
    band = _band(meta, book, flatten(std)[0])
    same_inf = np.isinf(book) & (lab == book)  # -inf: an unavailable action
    with np.errstate(invalid="ignore"):
        difference = np.where(same_inf, 0.0, lab - book)
    if np.all(np.abs(difference) <= band):
        return "reproduced", "exactly the book's" if np.max(band) == 0 else f"within ±{_fmt(np.max(band))} of the book"
    if meta["compare"] == "approx":
        return "worse", f"off by up to {_fmt(np.max(np.abs(difference)))} (band ±{_fmt(np.max(band))})"
    if layout is not None:
        return "worse", f"elements off by up to {_fmt(np.max(np.abs(difference)))}"
    sign = 1.0 if meta["compare"] == "higher" else -1.0
    side = "better" if sign * difference[0] > 0 else "worse"
    where = "above" if difference[0] > 0 else "below"
    return side, f"{_fmt(abs(difference[0]))} {where} the book (band ±{_fmt(band[0])})"


def sample_quality(metrics):
    """The numeric sample-quality metrics (`quality/*`) of one run's metrics, or None when it recorded none."""
    quality = {key: float(value) for key, value in metrics.items()
               if key.startswith("quality/") and isinstance(value, (int, float)) and not isinstance(value, bool)}
    return quality or None


def mean_quality(per_seed):
    """Mean over seeds of the sample-quality metrics every seed recorded (None when a seed recorded none)."""
    if not per_seed or None in per_seed:
        return None
    keys = set.intersection(*(set(q) for q in per_seed))
    return {key: float(np.mean([q[key] for q in per_seed])) for key in sorted(keys)}


def judge(meta, mean, std, quality=None):
    """(verdict, reason): `verdict` on the metric, then for GAN and VAE presets the samples' quality
    (means over seeds, or None) against gans.quality's bar (see QUALITY_RULES)."""
    word, reason = verdict(meta, mean, std)
    if meta.get("kind") not in QUALITY_KINDS:
        return word, reason
    try:
        passed, text = quality_bar(quality or {}, meta.get("quality_bar"))
    except ValueError as e:
        raise ReproduceError(f"{meta['id']}: meta.quality_bar: {e}") from None
    if passed is None:
        text = "samples not judged: no quality score for the bar (judged before the quality bar: rerun it)"
        if word in ("reproduced", "better"):  # cannot stand without the samples, nor be called worse unseen
            return "not comparable", f"{word} on {meta['metric']} ({reason}), but {text}"
    elif word in ("reproduced", "better") and not passed:
        return "worse", f"{word} on {meta['metric']} ({reason}), but {text}"
    return word, f"{reason}; {text}"


def aggregate(values):
    """Mean and population std over seeds of numbers or nested lists laid out alike (None if none)."""
    values = [flatten(v) for v in values if v is not None]
    if not values:
        return None, None
    layout = values[0][1]
    if any(other != layout for _, other in values):
        raise ReproduceError("the seeds' values of one metric are laid out differently")
    array = np.stack([flat for flat, _ in values])
    with np.errstate(invalid="ignore"):  # -inf entries (unavailable actions): mean -inf, std nan
        mean, std = array.mean(axis=0), array.std(axis=0)
    return unflatten(mean, layout), unflatten(np.where(np.isnan(std), 0.0, std), layout)


def _fmt(value, digits=5):
    if isinstance(value, list):  # exact values (tables, fixtures): more digits
        return "[" + ", ".join(_fmt(v, 8) for v in value) + "]"
    if value is None:
        return "—"
    value = float(value)
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else "−inf" if value < 0 else "inf"
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.{digits}g}"


# ----- one preset, end to end -----
def seed_overrides(preset_id, meta, seeds, scale):
    """{seed: the train.py overrides of that seed's run}."""
    overrides = [f"experiment={preset_id}", "quiet=true", *budget_overrides(preset_id, meta, scale)]
    return {seed: [*overrides, f"seed={seed}"] for seed in seeds}


def reproduce(preset_id, meta, seeds, scale, runs_dir, out, jobs=1, timeout=None, log=print):
    """Run (or reuse) every seed of one preset and return its results.json entry."""
    per_seed = seed_overrides(preset_id, meta, seeds, scale)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    digest = preset_digest(preset_id)

    def one(seed):
        run_dir = run_dir_of(runs_dir, preset_id, seed)
        if is_done(run_dir, per_seed[seed], digest):
            log(f"  {preset_id} seed {seed}: done before, reused")
            stamp = json.loads((run_dir / STAMP).read_text())
            return seed, {"status": "completed", "wall_s": stamp.get("wall_s"), "error": None}
        log(f"  {preset_id} seed {seed}: running")
        result = run_one(run_dir, per_seed[seed], timeout, threads)
        stamp = {"overrides": per_seed[seed], "preset_sha256": digest, "wall_s": result["wall_s"]}
        (run_dir / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
        log(f"  {preset_id} seed {seed}: {result['status']} in {result['wall_s']:.1f} s"
            + (f" ({result['error']})" if result["error"] else ""))
        return seed, result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = dict(pool.map(one, seeds))
    completed = [s for s in seeds if results[s]["status"] == "completed"]
    values = [metric_value(run_dir_of(runs_dir, preset_id, s), meta["metric"]) for s in completed] \
        if meta["metric"] else []
    mean, std = aggregate(values)
    quality = None
    if meta["kind"] in QUALITY_KINDS:
        quality = mean_quality([sample_quality(json.loads((run_dir_of(runs_dir, preset_id, s) / "metrics.json")
                                                          .read_text())) for s in completed])
    curve = plot_curve(preset_id, meta, [run_dir_of(runs_dir, preset_id, s) for s in completed], out)
    walls = [results[s]["wall_s"] for s in seeds if results[s]["wall_s"] is not None]
    entry = {
        "id": preset_id, "book": meta["book"], "chapter": meta["chapter"], "kind": meta["kind"],
        "reported": meta["reported"], "reported_value": meta["reported_value"], "metric": meta["metric"],
        "compare": meta["compare"], "seeds": list(seeds), "completed_seeds": completed, "values": values,
        "mean": mean, "std": std, "budget_scale": scale, "budget_note": meta["budget_note"],
        "wall_s_per_seed": float(np.mean(walls)) if walls else None,
        "substitute": meta["substitute"], "curve": curve, "quality": quality,
        "errors": {str(s): results[s]["error"] for s in seeds if results[s]["error"]},
        "date": datetime.date.today().isoformat(),
    }
    entry["verdict"], entry["reason"] = entry_verdict(meta, entry) if completed else \
        ("failed", results[seeds[0]]["error"])
    return entry


def plot_curve(preset_id, meta, run_dirs, folder):
    """The preset's learning curve (mean ± std over seeds) as `folder`/<id>.png; its file name, or None."""
    if not meta["curve"] or not run_dirs:
        return None
    from scripts.plot import plot_runs
    name = f"{preset_id}.png"
    try:
        plot_runs(run_dirs, tag=meta["curve"], out=str(Path(folder) / name), smoothing=meta["curve_smoothing"] or 0)
    except (ValueError, FileNotFoundError):  # the runs logged no such scalar
        return None
    return name


# ----- results file and report -----
def docs_folder(report):
    """The folder of a tracked report's results.json and curves: docs/reproduction.md -> docs/reproduction/."""
    return Path(report).with_suffix("")


def load_results(folder):
    path = Path(folder) / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def merge_results(folder, entries, presets=None):
    """Put these presets' entries into `folder`/results.json, keeping every other entry; with `presets`,
    every GAN and VAE entry's verdict is also judged again (`current_verdict`), so the file says what the
    report says. Reproductions of other presets may run at the same time: the read-modify-write holds an
    exclusive lock on the folder."""
    path = Path(folder) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        results = load_results(folder) | {entry["id"]: entry for entry in entries}
        for entry in results.values() if presets is not None else ():
            entry["verdict"], entry["reason"] = current_verdict(entry, presets)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(sorted(results.items())), indent=1) + "\n")
        tmp.replace(path)
    finally:
        os.close(descriptor)  # releases the lock


def publish(out, entries, report, presets, command=None):
    """--write: merge `entries` of the results directory `out` (with their curves) into the tracked report."""
    folder = docs_folder(report)
    folder.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        if entry.get("curve") and (Path(out) / Path(entry["curve"]).name).is_file():
            shutil.copyfile(Path(out) / Path(entry["curve"]).name, folder / Path(entry["curve"]).name)
    merge_results(folder, entries, presets)
    write_report(report, folder, presets, command)


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _lab_value(entry):
    if entry["mean"] is None:
        return "—"
    if isinstance(entry["mean"], list):
        return _fmt(entry["mean"])
    spread = f" ± {_fmt(entry['std'])}" if len(entry["completed_seeds"]) > 1 else ""
    return _fmt(entry["mean"]) + spread


def entry_verdict(meta, entry):
    """(verdict, reason) of a results.json entry with completed seeds, from its mean, std and quality."""
    word, reason = judge(meta, entry["mean"], entry["std"], entry.get("quality"))
    failures = len(entry["seeds"]) - len(entry["completed_seeds"])
    return word, reason + (f"; {failures} of {len(entry['seeds'])} seeds failed" if failures else "")


def current_verdict(entry, presets):
    """(verdict, reason) of a results.json entry as the report shows it: a GAN or VAE preset's is judged
    again, so the report always applies the current quality bar (an entry whose preset is gone keeps its own)."""
    meta = presets.get(entry["id"])
    if entry["kind"] not in QUALITY_KINDS or meta is None or not entry["completed_seeds"]:
        return entry["verdict"], entry["reason"]
    # against the book's number the entry was measured for, should the preset have changed since
    return entry_verdict({**meta, **{key: entry[key] for key in ("metric", "reported_value", "compare")}}, entry)


def render(results, presets, command=None, folder=""):
    """The markdown report: rules, one results table per kind group, then what was not run. `folder` is
    where results.json and the curves lie, relative to the report ("" for the same directory)."""
    prefix = f"{folder}/" if folder else ""
    lines = ["# Reproduction of the books' chapter experiments", "",
             "Generated by `scripts/reproduce.py` from real runs of the presets in `conf/experiment/` "
             "(do not edit by hand: rerun the script). Per-preset results are in "
             f"[`{prefix}results.json`]({prefix}results.json), learning curves (mean ± std over "
             f"seeds) in `{prefix}<id>.png`.", "",
             f"Machine of the latest run: {platform.platform()}, {os.cpu_count()} CPU cores, Python "
             f"{platform.python_version()}." + (f" Latest command: `{command}`." if command else ""), "",
             "## How the verdicts are decided", "", VERDICT_RULES, "", "### Generative models: the samples", "",
             QUALITY_RULES, ""]
    counts = collections.Counter(current_verdict(entry, presets)[0] for entry in results.values())
    if counts:
        lines += ["Summary: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + f" ({len(results)} presets "
                  "run).", ""]
    for group, title in SECTIONS.items():
        entries = [e for i, e in sorted(results.items()) if kind_group(e["kind"]) == group]
        if not entries:
            continue
        lines += [f"## {title}", "",
                  "| id | book, ch. | the book reports | metric | lab (mean ± std) | seeds | budget | wall / seed | "
                  "verdict | curve |", "|---|---|---|---|---|---|---|---|---|---|"]
        for e in entries:
            budget = "full" if e["budget_scale"] == 1 else f"×{_fmt(e['budget_scale'])}"
            wall = f"{e['wall_s_per_seed']:.0f} s" if e["wall_s_per_seed"] is not None else "—"
            curve = f"[png]({prefix}{Path(e['curve']).name})" if e["curve"] else "—"
            metric = f"`{e['metric']}`" if e["metric"] else "—"
            word, reason = current_verdict(e, presets)
            verdict_cell = f"**{word}**: {reason}"
            if e.get("substitute"):
                verdict_cell += f" (on a substitute: {e['substitute']})"
            cells = (f"`{e['id']}`", f"{e['book']} {e['chapter']}", e["reported"], metric, _lab_value(e),
                     len(e["completed_seeds"]), budget, wall, verdict_cell, curve)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    not_run = []
    for preset_id, meta in sorted(presets.items()):
        if preset_id in results:
            continue
        reason = unavailable(meta) or "not run yet (`python scripts/reproduce.py " + preset_id + "`)"
        if meta.get("budget_note"):
            reason += f"; {meta['budget_note']}"
        cells = (f"`{preset_id}`", f"{meta['book']} {meta['chapter']}", meta["kind"], reason)
        not_run.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if not_run:
        lines += ["## Not run", "", "| id | book, ch. | kind | why |", "|---|---|---|---|", *not_run, ""]
    return "\n".join(lines)


def write_report(report, folder, presets, command=None):
    """Regenerate the markdown `report` from `folder`/results.json."""
    report = Path(report)
    report.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(Path(folder).resolve(), report.parent.resolve())
    report.write_text(render(load_results(folder), presets, command, "" if relative == "." else relative))


# ----- command line -----
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", help="preset ids or shell globs ('homl18-*')")
    parser.add_argument("--all", action="store_true", help="every preset")
    parser.add_argument("--kind", choices=sorted(KINDS), help="only presets of this kind group")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per preset (a preset's meta.seeds wins)")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply each preset's budget keys")
    parser.add_argument("--out", default="reproduction",
                        help="the results directory: results.json, curves and reproduction.md (default ./reproduction)")
    parser.add_argument("--write", action="store_true",
                        help="also merge the results into the tracked docs/reproduction.md and docs/reproduction/")
    parser.add_argument("--docs", default=str(DOCS_REPORT), help=argparse.SUPPRESS)  # tests: where --write writes
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "reproduce"), help="where the runs go")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run before it is stopped")
    parser.add_argument("--include-skipped", action="store_true", help="also run presets whose meta says skip")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from results.json")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be >= 1")
    if not args.budget_scale > 0:
        parser.error(f"--budget-scale must be > 0, got {args.budget_scale}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    presets = load_presets()
    command = "python scripts/reproduce.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    if args.report_only:
        write_report(out / "reproduction.md", out, presets)
        print(f"wrote {out / 'reproduction.md'}")
        if args.write:
            publish(out, list(load_results(out).values()), args.docs, presets, command)
            print(f"wrote {args.docs}")
        return 0
    ids = select(presets, args.presets, args.all, args.kind)
    plan = []
    for preset_id in ids:
        meta = presets[preset_id]
        reason = unavailable(meta, named=preset_id in args.presets, include_skipped=args.include_skipped)
        seeds = list(range(meta["seeds"] or args.seeds))
        plan.append((preset_id, meta, seeds, reason))
    if args.dry_run:
        for preset_id, meta, seeds, reason in plan:
            if reason:
                print(f"skip {preset_id}: {reason}")
                continue
            scale = "" if args.budget_scale == 1 else \
                f", budget ×{args.budget_scale:g} of {meta['budget_keys'] or 'no keys'}"
            per_seed = seed_overrides(preset_id, meta, seeds, args.budget_scale)
            digest = preset_digest(preset_id)
            states = ["done" if is_done(run_dir_of(args.runs_dir, preset_id, s), per_seed[s], digest) else "to run"
                      for s in seeds]
            print(f"run  {preset_id}: seeds {seeds} ({', '.join(states)}){scale} -> "
                  f"{run_dir_of(args.runs_dir, preset_id, '<k>')}")
        return 0
    entries = []
    for preset_id, meta, seeds, reason in plan:
        if reason:
            print(f"{preset_id}: not run: {reason}")
            continue
        print(f"{preset_id}: {len(seeds)} seed(s)")
        entry = reproduce(preset_id, meta, seeds, args.budget_scale, args.runs_dir, out, args.jobs, args.timeout)
        print(f"{preset_id}: {entry['verdict']} ({entry['reason']}); lab {_lab_value(entry)}")
        merge_results(out, [entry])
        entries.append(entry)
    write_report(out / "reproduction.md", out, presets, command)
    note = "" if args.write else " (the tracked report changes only with --write)"
    print(f"wrote {out / 'reproduction.md'}{note}")
    if args.write:
        publish(out, entries, args.docs, presets, command)
        print(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReproduceError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
