"""The `Run` a trainer receives: the run directory and its lock, the config snapshot, the logger,
checkpoint files, the resume state and stop requests. The trainer's loop runs in `run.session(...)`
(core/runtime/session.py), which saves and restores through `run.checkpoints` and `run.resume_state`:

    with Run(run_dir, config=plain_config_dict, seed=0, resume=None) as run:
        metrics = trainer.train(cfg, run)       # session.track(...), while session.running(): ...
        run.finish(metrics)                      # metrics.json + TensorBoard hparams record
        print(run.summary(metrics))              # where the results are and how to look at them

Checkpoints live in `<run dir>/checkpoints/`: `ckpt_<step>.ckpt` for the last `keep` periodic saves
and `last.ckpt`, the newest of them (a hard link, so it costs no second write); `resume=<run dir>`
takes the newest. `best.ckpt` holds the policy of the best evaluation so far (written by the
session, never pruned). Every file is written atomically (core.save), so a crash leaves the previous
checkpoint intact, and a state holding a NaN array or Tensor is refused (NonFiniteError) rather
than written over a good one.

Signals: the first SIGINT (Ctrl-C) or SIGTERM sets the stop flag that `should_stop()` reports;
the trainer then checkpoints and returns. A second one exits at once (status 130).

Nothing here knows about Hydra: the caller passes a plain config dict.
"""
import fnmatch
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from core.backend import get_array_module, to_number, to_numpy
from core.runtime.errors import ConfigError, NonFiniteError  # noqa: F401  (re-exported)
from core.runtime.logger import Closeable, RunLogger, flatten_config
from core.runtime.rng import get_rng_state, set_rng_state  # noqa: F401  (re-exported)
from core.serialization import load, save
from core.tensor import Tensor

LAST = "last.ckpt"
BEST = "best.ckpt"
_PERIODIC = re.compile(r"^ckpt_(\d+)\.ckpt$")


def resolve_resume(path):
    """The checkpoint file `resume=<path>` names. A run directory means its newest checkpoint: the
    highest-step ckpt_<step>.ckpt (newer than last.ckpt when a crash fell between writing the two),
    else last.ckpt."""
    path = Path(path).expanduser()
    if path.is_dir():
        ckpts = Checkpoints(path / "checkpoints")
        newest = (ckpts.periodic() or [ckpts.last_path])[-1]
        if not newest.is_file():
            raise FileNotFoundError(f"{path} holds no checkpoint (expected {ckpts.last_path})")
        return newest
    if not path.is_file():
        raise FileNotFoundError(f"no run directory or checkpoint file at {path}")
    return path


def run_dir_of_checkpoint(path):
    """The run directory a checkpoint file belongs to (`<run>/checkpoints/<file>`), or None."""
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def _first_nan(obj, where="state"):
    """The position of the first NaN-holding float array/Tensor in a nested state, or None."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        is_array = isinstance(obj, (Tensor, np.ndarray, np.generic)) or get_array_module(obj) is not np
        if is_array:
            array = to_numpy(obj)
            if array.dtype.kind in "fc" and np.isnan(array).any():
                return where
        return None
    for key, value in items:
        found = _first_nan(value, f"{where}[{key!r}]")
        if found:
            return found
    return None


class Checkpoints:
    """Atomic periodic checkpoints in `directory`: `save(state, step)` writes `ckpt_<step>.ckpt`,
    points `last.ckpt` at it and keeps the newest `keep` periodic files (keep <= 0: all)."""

    def __init__(self, directory, keep=3, config=None):
        self.directory = Path(directory)
        self.keep = keep
        self.config = config
        self.last_saved_step = None  # step of the newest checkpoint this process wrote

    @property
    def last_path(self):
        return self.directory / LAST

    @property
    def best_path(self):
        return self.directory / BEST

    def save(self, state, step):
        """Write `state` (a dict as core.save accepts) for `step`; the run config and the step are
        stored with it under "config" and "step". Returns the path written."""
        path = self._write(state, step, f"ckpt_{int(step)}.ckpt")
        self._point_last_at(path)
        self._prune()
        self.last_saved_step = int(step)
        return path

    def save_best(self, state, step):
        """Write `state` of `step` as best.ckpt (over the previous best; periodic saves never remove it)."""
        return self._write(state, step, BEST)

    def saved_best(self):
        """The session's record of the best evaluation stored in best.ckpt, or None without one."""
        if not self.best_path.is_file():
            return None
        return (load(self.best_path).get("session") or {}).get("best")

    def _write(self, state, step, name):
        step = int(step)
        bad = _first_nan(state)
        if bad:
            raise NonFiniteError(f"refusing to checkpoint step {step}: {bad} holds NaN; "
                                 f"the last good checkpoint stays {self.last_good()}")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / name
        save({**state, "step": step, "config": self.config}, path)
        return path

    def _point_last_at(self, path):
        tmp = self.directory / f".{LAST}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:  # a filesystem without hard links: write the bytes again
            tmp.write_bytes(path.read_bytes())
        os.replace(tmp, self.last_path)  # atomic: last.ckpt is always a complete checkpoint

    def _prune(self):
        if self.keep <= 0:
            return
        for old in self.periodic()[:-self.keep]:
            old.unlink(missing_ok=True)

    def remove_stale_temporaries(self):
        """Remove what an interrupted checkpoint write left behind (core.save's and last.ckpt's temp files)."""
        if self.directory.is_dir():
            for path in self.directory.glob("*.tmp"):  # pathlib's "*" also matches the hidden .last.ckpt.*.tmp
                path.unlink(missing_ok=True)

    def periodic(self):
        """The `ckpt_<step>.ckpt` files, oldest step first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _PERIODIC.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self):
        """The newest checkpoint (last.ckpt) as a dict, or None when there is none."""
        return load(self.last_path) if self.last_path.is_file() else None

    def last_good(self):
        if not self.last_path.is_file():
            return "none (no checkpoint was written yet)"
        return f"{self.last_path}" + (f" (step {self.last_saved_step})" if self.last_saved_step is not None else "")


class RunDirectoryBusy(ConfigError):
    """Another process is writing the run directory."""


# what may change when a run is resumed (fnmatch patterns over the flattened config): budgets,
# evaluation, logging and checkpoint cadence, the device and learning rates; anything else
# (architecture, algorithm, seed, data) would make the resumed run another experiment
RESUMABLE = ("resume", "quiet", "device", "checkpoint_every", "keep_checkpoints", "eval_episodes", "console_every",
             "capture_video", "logger.*",
             "*.total_timesteps", "*.total_episodes", "*.epochs", "*.steps", "*.eval_every", "*.log_every",
             "*.target_return", "*.lr", "*.lr_*", "*_lr", "*.quality.*", "*.grid_size", "*.eval_greedy")


class Run(Closeable):
    """One training run in `directory` (see the module docstring).

    config: the resolved run config as plain dicts/lists/scalars; written to `config.yaml`, logged
        as text, stored in every checkpoint and recorded with the final metrics (TensorBoard HParams).
    resume: None, or a run directory / checkpoint file to continue from (loaded into `resume_state`).

    Constructing a Run only checks and locks: nothing is written into the directory until the
    trainer first logs or starts its session, so a run refused at start-up (a bad option, a busy
    or foreign directory) changes nothing there, and `discard()` removes a directory it created.
    """

    def __init__(self, directory, config=None, seed=0, device="cpu", quiet=False, resume=None,
                 keep_checkpoints=3, tensorboard=True, histogram_every=0, overrides=None):
        self.dir = Path(directory)
        self.config = config or {}
        self.seed = int(seed)
        self.device = device
        self.quiet = quiet
        self.histogram_every = histogram_every
        self._tensorboard = tensorboard
        self.overrides = overrides  # the command line's overrides (Hydra's), kept for resume and plots
        self._logger = None
        self._lock_fd = None
        self.checkpoints = Checkpoints(self.dir / "checkpoints", keep_checkpoints, self.config)
        self.resume_path = resolve_resume(resume) if resume else None
        if self.resume_path is None and self.checkpoints.last_path.exists():
            raise FileExistsError(f"{self.dir} already holds a run's checkpoints; pass resume={self.dir} to continue "
                                  "it, or choose another run directory")
        self.created_dir = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self.resume_state = load(self.resume_path) if self.resume_path else None
        self.resume_changes = self._check_resume_config() if self.resume_state is not None else {}
        self.checkpoints.remove_stale_temporaries()
        self._stop_requested = False
        self._previous_handlers = {}
        self._install_signal_handlers()

    # ----- the directory -----
    def _lock(self):
        """An exclusive lock on the directory itself (no lock file, so a refused run leaves no
        trace); the OS drops it when the process dies, so a killed run never leaves it locked."""
        import fcntl
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirectoryBusy(f"{self.dir} is in use by another run; wait for it to finish or choose another "
                                   "run directory") from None
        self._lock_fd = fd

    def _check_resume_config(self):
        """{key: (saved, new)} of the options this resume changes; ConfigError for an option that may not change."""
        saved = self.resume_state.get("config") or {}
        saved_choices, choices = saved.get("choices") or {}, self.config.get("choices") or {}
        for group in ("agent", "model"):
            if saved_choices.get(group) != choices.get(group) and (saved_choices.get(group) or choices.get(group)):
                raise ConfigError(f"{self.resume_path} was trained with {group}={saved_choices.get(group)}, this run "
                                  f"has {group}={choices.get(group)}; resume it with its own {group}, or start a "
                                  "new run")
        old, new = flatten_config(saved), flatten_config(self.config)
        changes = {key: (old.get(key), new.get(key)) for key in old.keys() | new.keys()
                   if old.get(key) != new.get(key) and not key.startswith("choices.")}
        refused = sorted(key for key in changes if not any(fnmatch.fnmatchcase(key, p) for p in RESUMABLE))
        if refused:
            shown = ", ".join(f"{key}={changes[key][0]!r}->{changes[key][1]!r}" for key in refused[:4])
            raise ConfigError(f"resume cannot change {shown}: a resumed run keeps its settings except budgets, "
                              "evaluation, logging, checkpointing, device and learning rates (see docs/running.md); "
                              "start a new run instead")
        return changes

    def start(self):
        """Write the config snapshot and open the TensorBoard writer (done by the first log call)."""
        if self._logger is not None:
            return
        _write_yaml(self.dir / "config.yaml", self.config)
        if self.overrides is not None:
            (self.dir / ".hydra").mkdir(exist_ok=True)
            _write_yaml(self.dir / ".hydra" / "overrides.yaml", list(self.overrides))
        self._logger = RunLogger(self.dir, config=self.config, quiet=self.quiet, use_tensorboard=self._tensorboard)
        step = (self.resume_state or {}).get("step", 0)
        for key, (old, new) in sorted(self.resume_changes.items()):
            if key != "resume":
                self._logger.text("resume", f"step {step}: {key} {old!r} -> {new!r}")

    @property
    def logger(self):
        self.start()
        return self._logger

    @property
    def started(self):
        return self._logger is not None

    def session(self, name, unit, total, **options):
        """The training session of this run (see core.runtime.session.Session)."""
        from core.runtime.session import Session
        return Session(self, name, unit, total, **options)

    def discard(self):
        """Undo a run that failed before it started: remove the directory if this run created it
        and wrote nothing into it."""
        self.close()
        if self.created_dir and not self.started and self.dir.is_dir() and not any(self.dir.iterdir()):
            self.dir.rmdir()

    # ----- stopping -----
    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (e.g. a threaded launcher): no graceful stop there
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        if self._stop_requested:
            sys.stderr.write(f"\n{name} again: exiting now without a checkpoint\n")
            os._exit(130)
        self._stop_requested = True
        sys.stderr.write(f"\n{name}: stopping after the current step and saving a checkpoint "
                         "(send it again to exit at once)\n")

    def request_stop(self):
        """Ask the trainer to checkpoint and return (what the first Ctrl-C does)."""
        self._stop_requested = True

    def should_stop(self):
        return self._stop_requested

    # ----- checks and logging helpers -----
    def check_finite(self, name, value, step):
        """Raise NonFiniteError when `value` (a number, array or Tensor) holds NaN or inf."""
        array = to_numpy(value)
        if np.isfinite(array).all():
            return
        shown = array.item() if array.ndim == 0 else f"an array with {np.size(array) - np.isfinite(array).sum()} " \
                                                       "non-finite entries"
        raise NonFiniteError(f"{name} is {shown} at step {int(step)}: training stopped; the last good checkpoint is "
                             f"{self.checkpoints.last_good()}")

    def log_histograms(self, module, step, prefix=""):
        """Histograms of `module`'s parameters and gradients every `histogram_every` steps (0: never)."""
        if not self.histogram_every or step % self.histogram_every:
            return
        for name, param in module.named_parameters():
            self.logger.histogram(f"{prefix}params/{name}", param, step)
            if param.grad is not None:
                self.logger.histogram(f"{prefix}grads/{name}", param.grad, step)

    # ----- the end -----
    def finish(self, metrics, status="completed"):
        """Write metrics.json ({"status": status, **metrics}) and the HParams record, then close."""
        self.logger.write_metrics({"status": status, **metrics})
        numbers = {k: v for k, v in metrics.items() if _is_finite_number(v)}
        if numbers:
            self.logger.hparams(flatten_config(self.config), numbers)
        self.close()

    def fail(self, status, message):
        """Record a run that ended on an error: metrics.json gets the status and the message where it
        can still be written (a full disk may refuse even that); the checkpoints stay as they are."""
        try:
            if self.started:
                self._logger.write_metrics({"status": status, "error": message})
        except OSError:
            pass
        self.close()

    def summary(self, metrics, status="completed", evaluable=True):
        """The lines a finished run prints: where its results are, its main numbers, how to look at them
        (`evaluable`: scripts/evaluate.py has a hook for this trainer)."""
        shown = [f"{key} {_short(value)}" for key, value in metrics.items()
                 if key.startswith(("eval/return", "quality/", "train/", "losses/", "check/", "test/", "opt/"))
                 and _is_finite_number(value)][:8]
        lines = [f"run {status}: {self.dir}"]
        if shown:
            lines.append("  " + ", ".join(shown))
        looks = [f"tensorboard --logdir {self.dir}"]
        tags = sorted(self._logger.scalar_tags) if self._logger is not None else []
        if "charts/episodic_return" in tags:
            looks.append(f"python scripts/plot.py {self.dir}")
        elif tags:  # plot.py's default tag is the episodic return: name one this run has
            losses = [t for t in tags if t.startswith("losses/")]
            tag = "losses/loss" if "losses/loss" in losses else (losses or tags)[0]
            looks.append(f"python scripts/plot.py {self.dir} --tag {tag}")
        if evaluable:
            best = " [checkpoint=best]" if self.checkpoints.best_path.is_file() else ""
            looks.append(f"python scripts/evaluate.py {self.dir}{best}")
        lines.append("  look: " + " | ".join(looks))
        if status != "completed":
            lines.append(f"  continue: python scripts/train.py resume={self.dir}")
        return "\n".join(lines)

    def close(self):
        if self._logger is not None:
            try:
                self._logger.close()
            except OSError:
                pass  # the error that ends the run was reported where it happened
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _short(value):
    value = to_number(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _is_finite_number(value):
    try:
        return math.isfinite(float(to_number(value)))
    except (TypeError, ValueError):
        return False


def _write_yaml(path, config):
    import yaml
    from core.serialization import atomic_write
    atomic_write(path, yaml.safe_dump(config, sort_keys=False).encode())
