"""Sweeps (Hydra multirun): job directory names, progress while the jobs run, and the report at the end.

`SweepReport` is registered in conf/config.yaml as a Hydra callback. Each job records its own status
in its metrics.json (a failed one with the one-line reason), so progress and report read the job
directories and work for every launcher, also those that run jobs in other processes:

- start: a sweep directory that already holds a sweep is refused unless the sweep is resumed
  (`-m resume=<sweep dir>`, scripts/train.py);
- while it runs: `sweep: 3/8 jobs done, 1 failed, 0:01:10 elapsed, ETA 0:01:57`, each time a job ends
  (a thread polling the jobs' metrics.json, so also when a launcher runs the jobs elsewhere);
- end: one row per job (overrides, status, reason of a failure, main metrics, wall time) on the
  console and in `summary.csv` / `summary.md`; jobs that differ only in `seed` aggregated
  (mean ± std, interquartile mean with a 95% bootstrap CI) in `aggregates.csv` and `summary.md`;
  their learning curves, one line per configuration with its 95% CI band, in `curves.png`.
  The failed jobs go to FAILED: scripts/train.py then exits non-zero.
"""
import csv
import datetime
import json
import math
import os
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from core.runtime.curves import configuration

FAILED = []  # (job directory, reason) of the last sweep in this process: the command's exit status
DIRNAME_LIMIT = 120  # characters of a job directory name (filesystems allow 255 bytes)
# the main metrics of the summary: keys of the jobs' metrics.json, by these prefixes in this order
MAIN_METRICS = ("eval/return_mean", "quality/", "test/", "check/", "opt/", "losses/")
MAIN_METRICS_SHOWN = 4
BOOTSTRAP_SAMPLES = 2000
POLL_SECONDS = 2.0
_JOB_NUMBER = re.compile(r"^(\d+)(?:_|$)")
_UNSAFE = re.compile(r"[^\w.+\-]")  # what may stand in a file name and, unquoted, in a Hydra override value


def dirname(prefix, overrides):
    """A run or job directory name: `prefix` (a job number or a time: what keeps it unique), then
    the overrides (Hydra's override_dirname, `dataset-toy/moons_seed-1`), made safe for file names and
    Hydra override values (`dataset-toy-moons_seed-1`) and cut to DIRNAME_LIMIT characters."""
    prefix = str(prefix)
    if not overrides:
        return prefix
    safe = _UNSAFE.sub("_", str(overrides).replace("/", "-"))
    return f"{prefix}_{safe}"[:DIRNAME_LIMIT]


OmegaConf.register_new_resolver("lab_dirname", dirname, replace=True)  # conf/config.yaml names directories with it


def override_key(override):
    """The key an override sets: `+agent.lr=0.1` -> `agent.lr`."""
    return str(override).split("=", 1)[0].lstrip("+~")


def job_number(directory):
    match = _JOB_NUMBER.match(Path(directory).name)
    return int(match.group(1)) if match else None


def job_statuses(sweep_dir):
    """[(job directory, metrics.json contents or None)] of a sweep directory, in job order."""
    jobs = []
    directories = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and job_number(p) is not None]
    for directory in sorted(directories, key=lambda p: (job_number(p), p.name)):
        path = directory / "metrics.json"
        try:
            jobs.append((directory, json.loads(path.read_text()) if path.is_file() else None))
        except (OSError, ValueError):
            jobs.append((directory, {"status": "failed", "error": f"unreadable {path}"}))
    return jobs


def holds_a_sweep(sweep_dir):
    sweep_dir = Path(sweep_dir)
    return sweep_dir.is_dir() and ((sweep_dir / "multirun.yaml").is_file() or bool(job_statuses(sweep_dir)))


def planned_jobs(config):
    """How many jobs the sweep will run: Optuna's n_trials, else the product of the sizes of the
    basic sweeper's sweep overrides (a,b,c / range(...)); None when it cannot be known."""
    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        return int(sweeper.n_trials)
    from hydra.core.override_parser.overrides_parser import OverridesParser
    total = 1
    try:
        for override in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    return None
                total *= len(list(override.sweep_string_iterator()))
    except Exception:  # a glob sweep needs the config to expand: the total stays unknown
        return None
    return total


def _clock(seconds):
    return str(datetime.timedelta(seconds=round(seconds)))


class SweepReport(Callback):
    def on_multirun_start(self, config, **kwargs):
        FAILED.clear()
        self._sweep_dir = Path(config.hydra.sweep.dir)
        resumed = config.get("resume") not in (None, "") and Path(config.resume).resolve() == self._sweep_dir.resolve()
        if holds_a_sweep(self._sweep_dir) and not resumed:
            # a callback's exceptions are only warnings to Hydra: SystemExit is what stops the sweep.
            # Only the basic sweeper saves multirun.yaml, what a resumed sweep reruns (Optuna's trials are new ones)
            how = (f"continue it with python scripts/train.py -m resume={self._sweep_dir}, or "
                   if (self._sweep_dir / "multirun.yaml").is_file() else "")
            print(f"error: {self._sweep_dir} already holds a sweep; {how}choose another hydra.sweep.dir",
                  file=sys.stderr)
            raise SystemExit(2)
        self._pid, self._start, self._total = os.getpid(), time.time(), planned_jobs(config)
        self._lock, self._shown, self._stop = threading.Lock(), None, threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._poller.start()

    def __getstate__(self):
        # launchers that run jobs in other processes (joblib, Ray) pickle the callbacks along: the
        # progress thread stays here (a copy's on_job_end does nothing, its pid is not ours)
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_stop", "_poller")}

    def on_job_end(self, config, job_return, **kwargs):
        # the basic launcher runs jobs in this process: report at once; elsewhere the poller does
        if getattr(self, "_pid", None) == os.getpid():
            self._progress()

    def on_multirun_end(self, config, **kwargs):
        if getattr(self, "_poller", None) is not None:
            self._stop.set()
            self._poller.join()
            self._progress()  # the jobs that ended since the last poll
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        jobs = [Job(directory, metrics) for directory, metrics in job_statuses(sweep_dir)]
        FAILED[:] = [(job.directory, job.reason) for job in jobs if job.failed]
        print(report(jobs, sweep_dir))

    def _poll(self):
        while not self._stop.wait(POLL_SECONDS):
            try:
                self._progress()
            except OSError:  # a job directory changing under the scan: the next poll sees it
                pass

    def _progress(self):
        """One line each time the number of ended jobs changes: done/total, failures, elapsed, ETA."""
        with self._lock:
            if not self._sweep_dir.is_dir():  # no job has started yet
                return
            ended = [metrics for directory, metrics in job_statuses(self._sweep_dir)
                     if metrics is not None and (directory / "metrics.json").stat().st_mtime >= self._start - 1]
            failed = sum(Job.is_failure(metrics) for metrics in ended)
            if (len(ended), failed) == self._shown or not ended:
                return
            self._shown = (len(ended), failed)
            elapsed = time.time() - self._start
            line = f"sweep: {len(ended)}{f'/{self._total}' if self._total else ''} jobs done"
            line += f", {failed} failed" if failed else ""
            line += f", {_clock(elapsed)} elapsed"
            if self._total and self._total > len(ended):
                line += f", ETA {_clock(elapsed / len(ended) * (self._total - len(ended)))}"
            print(line, flush=True)


class Job:
    """One job of a sweep, from its directory: overrides, status, reason, metrics."""

    ENDED = ("completed", "interrupted")

    def __init__(self, directory, metrics):
        self.directory, self.number, self.metrics = directory, job_number(directory), metrics or {}
        saved = directory / ".hydra" / "overrides.yaml"
        try:
            import yaml
            self.overrides = [str(o) for o in yaml.safe_load(saved.read_text()) or []] if saved.is_file() else []
        except (OSError, ValueError):
            self.overrides = []
        self.status = self.metrics.get("status", "failed")
        self.failed = self.is_failure(metrics)
        self.reason = self.metrics.get("error", "no metrics.json: the job did not finish") if self.failed else ""

    @classmethod
    def is_failure(cls, metrics):
        return (metrics or {}).get("status") not in cls.ENDED

    def number_of(self, key):
        value = self.metrics.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def main_metrics(jobs):
    """The summary's metric columns: `objective` (what the sweeper optimizes) when the jobs have it,
    then up to MAIN_METRICS_SHOWN numeric keys by the MAIN_METRICS prefixes; and the column that
    already is the objective (marked in the header), if one is."""
    ended = [job for job in jobs if not job.failed]
    keys = sorted({key for job in ended for key in job.metrics if job.number_of(key) is not None})
    chosen = list(dict.fromkeys(key for prefix in MAIN_METRICS for key in keys if key.startswith(prefix)))
    chosen = chosen[:MAIN_METRICS_SHOWN]
    # the objective gets a column of its own unless it is one of those (an agent's eval/return_mean)
    same = [key for key in chosen if all(job.number_of("objective") == job.number_of(key) for job in ended)]
    return (["objective"] if "objective" in keys and not same else []) + chosen, same[:1]


def iqm(values, axis=-1):
    """Interquartile mean: the mean of the middle half (scipy's trim_mean with 25% cut, as rliable's IQM)."""
    from scipy.stats import trim_mean
    return trim_mean(values, 0.25, axis=axis)


def aggregate(values, rng=None):
    """{n, mean, std, iqm, iqm_low, iqm_high} of one configuration's values over seeds: std with
    ddof=0, the IQM's 95% CI from a percentile bootstrap over the seeds (rliable's stratified
    bootstrap with one task); no CI below 2 seeds."""
    values = np.asarray(values, dtype=np.float64)
    result = {"n": len(values), "mean": values.mean(), "std": values.std(), "iqm": float(iqm(values)),
              "iqm_low": math.nan, "iqm_high": math.nan}
    if len(values) > 1 and np.ptp(values) > 0:
        from scipy.stats import bootstrap
        ci = bootstrap((values,), iqm, n_resamples=BOOTSTRAP_SAMPLES, method="percentile",
                       rng=rng if rng is not None else np.random.default_rng(0)).confidence_interval
        result["iqm_low"], result["iqm_high"] = float(ci.low), float(ci.high)
    elif len(values) > 1:  # all seeds agree: the interval is that one value
        result["iqm_low"] = result["iqm_high"] = float(values[0])
    return result


def _number(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def report(jobs, sweep_dir):
    """Write summary.csv, summary.md, aggregates.csv and curves.png into the sweep directory and
    return the console's text."""
    columns, objective = main_metrics(jobs)
    varying = _varying(jobs)
    rows = []
    for job in jobs:
        shown = [o for o in job.overrides if override_key(o) in varying] or job.overrides
        status = job.status if not job.failed else f"{job.status}: {job.reason}"
        rows.append([str(job.number), ",".join(shown), status, *(_number(job.number_of(k)) for k in columns),
                     _number(job.number_of("time/wall_s"))])
    header = ["job", "overrides", "status", *(f"{k} (objective)" if k in objective else k for k in columns), "wall_s"]
    _write_csv(sweep_dir / "summary.csv",
               ["job", "directory", "overrides", "status", "error", *columns, "wall_s"],
               [[job.number, job.directory.name, " ".join(job.overrides), job.status, job.reason,
                 *(job.number_of(k) for k in columns), job.number_of("time/wall_s")] for job in jobs])
    groups = _groups(jobs, columns)
    aggregate_header = ["configuration", "metric", "n", "mean", "std", "iqm", "iqm_ci95"]
    aggregate_rows = [[label, key, str(s["n"]), _number(s["mean"]), _number(s["std"]), _number(s["iqm"]),
                       f"[{_number(s['iqm_low'])}, {_number(s['iqm_high'])}]" if s["n"] > 1 else ""]
                      for label, stats in groups.items() for key, s in stats.items()]
    _write_csv(sweep_dir / "aggregates.csv", aggregate_header, aggregate_rows)
    curves = _plot(sweep_dir)
    completed = sum(not job.failed for job in jobs)
    title = f"sweep: {completed} of {len(jobs)} jobs completed in {sweep_dir}"
    shared = sorted({o for job in jobs for o in job.overrides if override_key(o) not in varying})
    common = [f"every job: {' '.join(shared)}"] if shared else []
    markdown = [f"# {title}", "", *common, "", _markdown(header, rows)]
    text = [title, *(f"  {line}" for line in common), _aligned(header, rows)]
    if any(s["n"] > 1 for stats in groups.values() for s in stats.values()):
        markdown += ["", "## Over seeds", "", _markdown(aggregate_header, aggregate_rows)]
        text += ["over seeds (mean ± std; interquartile mean [95% bootstrap CI]):",
                 _aligned(aggregate_header, aggregate_rows)]
    (sweep_dir / "summary.md").write_text("\n".join(markdown) + "\n")
    files = ["summary.csv", "summary.md", "aggregates.csv"] + (["curves.png"] if curves else [])
    text.append(f"  wrote {', '.join(files)} in {sweep_dir}")
    return "\n".join(text)


def _varying(jobs):
    """The override keys whose value differs between jobs (what the table shows of each job)."""
    values = {}
    for job in jobs:
        for override in job.overrides:
            values.setdefault(override_key(override), set()).add(override.partition("=")[2])
    keyed = [set(override_key(o) for o in job.overrides) for job in jobs]
    return {key for key, seen in values.items() if len(seen) > 1 or any(key not in k for k in keyed)}


def _groups(jobs, columns):
    """{configuration label: {metric: aggregate}} over the completed jobs that differ only in seed."""
    values = {}
    for job in jobs:
        if not job.failed:
            label = ",".join(configuration(job.overrides)) or "defaults"
            for key in columns:
                if job.number_of(key) is not None:
                    values.setdefault(label, {}).setdefault(key, []).append(job.number_of(key))
    return {label: {key: aggregate(v) for key, v in metrics.items()} for label, metrics in values.items()}


def _plot(sweep_dir):
    """The sweep's learning curves into curves.png; False when the jobs logged no curve to plot."""
    from core.runtime.curves import plot_runs
    try:
        plot_runs([sweep_dir], None, sweep_dir / "curves.png", band="ci")
    except (FileNotFoundError, ValueError):
        return False
    return True


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(["" if value is None else value for value in row] for row in rows)


def _markdown(header, rows):
    def cell(value):
        return str(value).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def _aligned(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header, *rows])
