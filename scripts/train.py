"""Train an agent or a generative model from the Hydra configs in conf/.

    python scripts/train.py agent=reinforce env=cartpole              # RL
    python scripts/train.py model=<name> dataset=mnist                # generative (default dataset: digits)
    python scripts/train.py experiment=<id>                           # a chapter preset
    python scripts/train.py -m agent=reinforce env=cartpole seed=0,1,2  # a sweep
    python scripts/train.py resume=runs/2024-05-01/12-00-00           # continue a run in its own directory
    python scripts/train.py -m resume=multirun/2024-05-01/12-00-00    # continue a sweep (its unfinished jobs)

Also installed as the command `lab-train`. See docs/running.md.

Errors in what the user passed (unknown group option or key, wrong type, a value that cannot
work, a launcher plugin that is not installed) print one line `error: ...` on stderr and exit
with status 2; a NaN/inf loss exits with status 1 after one line saying so.
"""
import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

if __package__ in (None, ""):  # run as `python scripts/train.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
import yaml  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException  # noqa: E402

from scripts import trainers  # noqa: E402
from core.runtime import sweep  # noqa: E402
from core.runtime.choices import Choice  # noqa: E402
from core.runtime.errors import ConfigError, NonFiniteError  # noqa: E402
from core.runtime.run import Run, RunDirectoryBusy, resolve_resume, run_dir_of_checkpoint  # noqa: E402
from core.serialization import CheckpointError  # noqa: E402
from envs.factory import Vectorization  # noqa: E402
from gans.datasets import DatasetName, Normalize, Split  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("agent", "env", "model", "dataset", "optim", "logger", "experiment")
DEFAULT_DATASET = "digits"  # of `model=<name>` runs: bundled with scikit-learn, so they start offline
# the shared schemas' types (core.runtime.choices; the others come from the modules that own them)
NativeDtype = Choice("NativeDtype", "float64 float32")
Optimizer = Choice("Optimizer", "adam sgd rmsprop")

# Hydra plugins behind optional extras: the config each registers -> (distribution, extra). The lab's
# presets (conf/hydra/launcher/{local_parallel,slurm,ray_cluster}.yaml, conf/hydra/sweeper/optuna_search.yaml)
# extend these configs, so without the plugin they fail to compose and `describe_error` names the extra.
PLUGIN_CONFIGS = {
    "hydra/launcher/joblib": ("hydra-joblib-launcher", "sweep"),
    "hydra/sweeper/optuna": ("hydra-optuna-sweeper", "sweep"),
    "hydra/launcher/submitit_slurm": ("hydra-submitit-launcher", "slurm"),
    "hydra/launcher/submitit_local": ("hydra-submitit-launcher", "slurm"),
    "hydra/launcher/ray": ("hydra-ray-launcher", "ray"),
}


JOB_ERROR = "LAB_SWEEP_JOB_ERROR"  # a sweep job's composition error, for the job (compose_failing_jobs)


class UsageError(ValueError):
    """Something the user passed cannot work: reported in one line, exit status 2."""


# ----- schemas of the shared groups (the algorithms' own Config classes live in their modules) -----
@dataclass
class RunConfig:
    seed: int = 0
    device: str = "cpu"
    resume: Optional[str] = None
    quiet: bool = False
    checkpoint_every: Optional[int] = None     # in the trainer's unit; None: the trainer's default
    keep_checkpoints: int = 3
    eval_episodes: int = 10
    console_every: Optional[int] = None        # agents: env steps between console lines; None: 10 per run
    capture_video: bool = False
    agent: Any = None
    env: Any = None
    model: Any = None
    dataset: Any = None
    optim: Any = None
    logger: Any = None
    meta: Any = None                           # experiment presets' catalogue data (scripts/reproduce.py)

    def validate(self):
        from core.backend import array_module
        try:
            array_module(self.device)
        except (ValueError, RuntimeError) as e:
            raise ValueError(str(e)) from None
        for name in ("checkpoint_every", "keep_checkpoints", "console_every"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_episodes < 1:
            raise ValueError(f"eval_episodes must be >= 1, got {self.eval_episodes}")


@dataclass
class EnvConfig:
    """An env for envs.factory: `id`, how many copies and how they step, then the wrapper options
    of `envs.factory.make_env` (see its docstring; agents.wrapper_options(cfg.env) collects them)."""
    id: str = "CartPole-v1"
    num_envs: int = 1
    vectorization: Vectorization = Vectorization.sync
    native_dtype: NativeDtype = NativeDtype.float64  # native envs: gymnasium's numbers, or float32 (faster)
    max_episode_steps: Optional[int] = None    # None: the registered time limit
    reward_scale: Optional[float] = None
    frame_skip: Optional[int] = None
    frame_stack: Optional[int] = None
    atari: Any = "auto"                        # auto | true | false: Atari preprocessing
    terminal_on_life_loss: bool = False
    # running normalisation of the vector env (envs/normalize.py), as SB3's VecNormalize
    normalize_obs: bool = False
    normalize_reward: bool = False             # rewards / std of the discounted return
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    norm_epsilon: float = 1e-8
    norm_gamma: Optional[float] = None         # the reward normaliser's discount; None: the agent's gamma (else 0.99)

    def validate(self):
        import importlib.util

        import gymnasium

        import envs  # noqa: F401  (registers the lab/ toy envs)
        from envs.atari import is_atari_id, require_ale
        ale_installed = importlib.util.find_spec("ale_py") is not None
        if is_atari_id(self.id):
            require_ale(self.id, preprocessing=self.atari is not False)  # names the missing extra
        elif self.id not in gymnasium.registry and ale_installed:
            import ale_py  # noqa: F401  (registers the legacy Atari ids, e.g. MsPacman-v0)
        if self.id not in gymnasium.registry:
            import difflib
            close = difflib.get_close_matches(self.id, list(gymnasium.registry), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            atari = "" if ale_installed else "; Atari games need ale-py: pip install -e '.[atari]'"
            raise ValueError(f"unknown env id {self.id!r}; {hint}env presets: {', '.join(group_options('env'))}"
                             f"{atari}")
        if self.num_envs < 1:
            raise ValueError(f"env.num_envs must be >= 1, got {self.num_envs}")
        if self.native_dtype != "float64" and self.vectorization != "native":
            raise ValueError(f"env.native_dtype={self.native_dtype} needs env.vectorization=native, "
                             f"got {self.vectorization}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"env.max_episode_steps must be >= 1 or null, got {self.max_episode_steps}")
        for name in ("clip_obs", "clip_reward", "norm_epsilon"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"env.{name} must be a positive finite number, got {getattr(self, name)}")
        if self.norm_gamma is not None and not 0 <= self.norm_gamma <= 1:
            raise ValueError(f"env.norm_gamma must be in [0, 1] or null (the agent's gamma), got {self.norm_gamma}")


@dataclass
class DatasetConfig:
    name: DatasetName = DatasetName.digits
    root: Optional[str] = None                 # None: $LAB_DATA_DIR, else the user cache dir (gans.datasets.data_dir)
    split: Split = Split.train
    normalize: Optional[Normalize] = Normalize("01")  # null: raw 0..255
    classes: Optional[List[int]] = None
    image_size: Optional[int] = None
    limit: Optional[int] = None
    download: bool = True                      # fetch missing files (checksummed)
    repeat: int = 1                            # passes over the images in one training epoch

    def validate(self):
        for name in ("image_size", "limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"dataset.{name} must be >= 1 or null, got {getattr(self, name)}")
        if self.repeat < 1:
            raise ValueError(f"dataset.repeat must be >= 1 (passes over the images an epoch), got {self.repeat}")


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    histogram_every: int = 0                   # parameter/gradient histograms every N steps; 0: never

    def validate(self):
        if self.histogram_every < 0:
            raise ValueError(f"logger.histogram_every must be >= 0, got {self.histogram_every}")


@dataclass
class OptimConfig:
    name: Optimizer = Optimizer.adam
    lr: float = 1e-3
    weight_decay: float = 0.0

    def validate(self):
        if not (self.lr > 0 and self.lr != float("inf")):
            raise ValueError(f"optim.lr must be a positive finite number, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class AdamConfig(OptimConfig):
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False


@dataclass
class SGDConfig(OptimConfig):
    name: Optimizer = Optimizer.sgd
    lr: float = 1e-2
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False


@dataclass
class RMSpropConfig(OptimConfig):
    name: Optimizer = Optimizer.rmsprop
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False


OPTIM_SCHEMAS = {"adam": AdamConfig, "sgd": SGDConfig, "rmsprop": RMSpropConfig}


def register_configs():
    """Put every schema into Hydra's ConfigStore (the yaml files in conf/ extend them)."""
    cs = ConfigStore.instance()
    cs.store(name="lab_schema", node=RunConfig)
    cs.store(group="env", name="env_schema", node=EnvConfig)
    cs.store(group="dataset", name="dataset_schema", node=DatasetConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    for name, schema in OPTIM_SCHEMAS.items():
        cs.store(group="optim", name=f"{name}_schema", node=schema)
    trainers.register()


def group_options(group):
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


# ----- what to train -----
# the config groups each kind of trainer reads; any other chosen group is refused, not ignored
USED_GROUPS = {"agent": ("agent", "env", "logger", "experiment"),
               "model": ("model", "dataset", "optim", "logger", "experiment")}


def tuned_notice(choices):
    """The line saying that `agent` has tuned hyperparameters (conf/tuned/<agent>_<env>.yaml) for other envs but
    not for the chosen one, so its defaults apply; None when the pair is tuned, the agent never is, or a preset
    (experiment=) sets the values."""
    agent, env = choices.get("agent"), choices.get("env")
    if not agent or not env or choices.get("experiment"):
        return None
    tuned = [f"{agent}_{option}" for option in group_options("env")]
    available = set(group_options("tuned"))
    if f"{agent}_{env}" in available or not available.intersection(tuned):
        return None
    return f"no tuned hyperparameters for {agent} on {env}: using {agent}'s defaults"


def select_algorithm(choices):
    """(kind, name, module) from the group choices; UsageError when the choice is incomplete or
    names a group the trainer does not use."""
    agent, env, model, dataset = (choices.get(g) for g in ("agent", "env", "model", "dataset"))
    if agent and model:
        raise UsageError(f"choose either agent+env (RL) or model+dataset (generative), got agent={agent} and "
                         f"model={model}")
    if agent:
        if not env:
            raise UsageError(f"agent={agent} needs env=<name>; envs: {', '.join(group_options('env'))}")
        kind, name = "agent", agent
    elif model:
        if not dataset:
            raise UsageError(f"model={model} needs dataset=<name>; datasets: {', '.join(group_options('dataset'))}")
        kind, name = "model", model
    else:
        raise UsageError("nothing to train: pass agent=<name> env=<name> (agents: "
                         f"{', '.join(group_options('agent'))}; envs: {', '.join(group_options('env'))}) or "
                         f"model=<name> (models: {', '.join(group_options('model')) or 'none yet'}) with dataset=<name> "
                         f"(default {DEFAULT_DATASET}; datasets: {', '.join(group_options('dataset'))})")
    unused = [f"{group}={choices[group]}" for group in GROUPS if choices.get(group) and group not in USED_GROUPS[kind]]
    if unused:
        where = "agent.*" if kind == "agent" else "model.*"
        raise UsageError(f"{', '.join(unused)} is not used by {kind}={name} (its settings are under {where}); "
                         f"remove it")
    registry = trainers.options(kind)
    if name not in registry:
        raise UsageError(f"conf/{kind}/{name}.yaml names no trainer: its defaults must start with <module>_schema "
                         f"of a module with Config and train (found: {', '.join(registry) or 'none'})")
    return kind, name, registry[name]


def check_normalization(cfg, name, module):
    """UsageError when the env config asks for normalisation and the agent does not honour it
    (agents/__init__.py: NORMALIZES_ENVS)."""
    env = cfg.get("env") or {}
    asked = [key for key in ("normalize_obs", "normalize_reward") if env.get(key)]
    if asked and not getattr(module, "NORMALIZES_ENVS", False):
        supported = sorted(option for option, agent in trainers.options("agent").items()
                           if getattr(agent, "NORMALIZES_ENVS", False))
        raise UsageError(f"env.{asked[0]}=true is not supported by agent={name}; agents that normalise their envs: "
                         f"{', '.join(supported)}")


def validate(cfg, kind):
    """Call `validate()` of the top-level schema and of every chosen section that has one."""
    sections = [kind, "env" if kind == "agent" else "dataset", "optim", "logger"]
    try:
        RunConfig(**{f.name: cfg[f.name] for f in dataclasses.fields(RunConfig) if f.name not in GROUPS}).validate()
        for section in sections:
            if cfg.get(section) is not None:
                obj = OmegaConf.to_object(cfg[section])
                if hasattr(obj, "validate"):
                    obj.validate()
    except (ValueError, OmegaConfBaseException) as e:
        raise UsageError(str(e).splitlines()[0]) from None


def main_metric(kind, module, metrics):
    """What train.py returns (higher is better, for optimizing sweepers): the module's MAIN_METRIC
    (a metrics key; a leading "-" negates it), else eval/return_mean for agents and
    -quality/frechet_distance for generative models. None when the run did not produce it."""
    key = getattr(module, "MAIN_METRIC", "eval/return_mean" if kind == "agent" else "-quality/frechet_distance")
    sign, key = (-1.0, key[1:]) if key.startswith("-") else (1.0, key)
    return sign * float(metrics[key]) if key in metrics else None


class RunFailed(Exception):
    """A run that ended on an error, already reported in one line: (message, exit status)."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")  # absolute: also as `lab-train`
def main(cfg):
    """Hydra's task function: train and return the main metric. A failed run prints one line; in a
    sweep the job records its failure (metrics.json) and the sweep goes on with the others."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        if multirun and os.environ.get(JOB_ERROR):  # its overrides could not be composed
            raise RunFailed(os.environ[JOB_ERROR], 2)
        return train_from_config(cfg, hydra_cfg, multirun)
    except RunFailed as e:
        if not multirun:
            _fail(str(e), e.status)
        print(f"job {hydra_cfg.job.num} failed: {e}", file=sys.stderr)
        _record_job_failure(run_dir, str(e), list(hydra_cfg.overrides.task))
        return float("nan")  # an optimizing sweeper marks the trial failed and goes on


def train_from_config(cfg, hydra_cfg, multirun):
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = {group: hydra_cfg.runtime.choices.get(group) for group in GROUPS}
    notice = tuned_notice(choices)
    tuned = hydra_cfg.runtime.choices.get("tuned")
    choices["tuned"] = tuned if tuned in group_options("tuned") else None  # which conf/tuned file applied
    overrides = [o for o in hydra_cfg.overrides.task if sweep.override_key(o) != "resume"]
    try:
        kind, name, module = select_algorithm(choices)
        if notice and (not multirun or hydra_cfg.job.num == 0):  # once, also in a sweep
            print(notice)
        validate(cfg, kind)
        if kind == "agent":
            check_normalization(cfg, name, module)
        # plain values (an enum choice as its string): what checkpoints and config.yaml may hold
        config = {**OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "choices": choices}
    except (UsageError, OmegaConfBaseException) as e:
        remove_unused_run_dir(run_dir)
        raise RunFailed(str(e).splitlines()[0], 2) from None
    resume = cfg.resume
    if multirun and resume is not None:  # -m resume=<sweep dir>: each job continues in its own directory
        previous = _saved_metrics(run_dir)
        if previous.get("status") == "completed":
            print(f"job {hydra_cfg.job.num} completed already: {run_dir}")
            return main_metric(kind, module, previous)
        try:
            resume = str(resolve_resume(run_dir))
        except FileNotFoundError:  # it never reached a checkpoint: it starts again
            resume = None
    logger = cfg.logger or {}
    try:
        run = Run(run_dir, config=config, seed=cfg.seed, device=cfg.device, quiet=cfg.quiet or multirun,
                  resume=resume, keep_checkpoints=cfg.keep_checkpoints, tensorboard=logger.get("tensorboard", True),
                  histogram_every=logger.get("histogram_every", 0), overrides=overrides)
    except (OSError, CheckpointError, ConfigError) as e:
        if not isinstance(e, RunDirectoryBusy):  # the other run's directory is not ours to remove
            remove_unused_run_dir(run_dir)
        raise RunFailed(_one_line(e), 2) from None
    with run:  # closed (lock, signal handlers, writer) whatever happens
        try:
            metrics = module.train(cfg, run)
        except ConfigError as e:  # the trainer refused the config while setting up
            if run.started:
                run.fail("failed", str(e))
            else:
                run.discard()
                remove_unused_run_dir(run_dir)
            raise RunFailed(str(e), 2) from None
        except NonFiniteError as e:
            run.fail("non-finite", str(e))
            raise RunFailed(str(e), 1) from None
        except OSError as e:  # a failed write (disk full, permissions): the last good checkpoint stays
            message = _one_line(e, "write")
            run.fail("write-error", message)
            raise RunFailed(f"{message}; the last good checkpoint stays {run.checkpoints.last_good()}", 1) from None
        status = "interrupted" if run.should_stop() else "completed"
        objective = main_metric(kind, module, metrics)
        try:  # a sweep job keeps what it returned to the sweeper, for the sweep's summary
            run.finish({**metrics, "objective": objective} if multirun and objective is not None else metrics,
                       status=status)
        except OSError as e:
            run.fail("write-error", _one_line(e, "write"))
            raise RunFailed(_one_line(e, "write"), 1) from None
    evaluable = hasattr(module, "make_policy") or hasattr(module, "sample") or hasattr(module, "evaluate")
    print(run.summary(metrics, status, evaluable) if not multirun else f"job {hydra_cfg.job.num} {status}: {run_dir}")
    return objective


def _saved_metrics(run_dir):
    import json
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def _one_line(error, action="use"):
    """One line for an error: an OSError names the path, what could not be done and the OS's reason."""
    if isinstance(error, OSError) and error.strerror:
        where = f"cannot {action} {error.filename}: " if error.filename else ""
        return f"{where}{error.strerror} (errno {error.errno})"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _record_job_failure(run_dir, message, overrides):
    """A failed sweep job's directory says why (its metrics.json) and what it was given (its
    overrides, as a run that started writes them), for the sweep's report."""
    import json
    from core.serialization import atomic_write
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved = run_dir / ".hydra" / "overrides.yaml"
        if not saved.is_file():
            saved.parent.mkdir(exist_ok=True)
            atomic_write(saved, yaml.safe_dump([o for o in overrides if sweep.override_key(o) != "resume"]).encode())
        path = run_dir / "metrics.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        atomic_write(path, (json.dumps({**previous, "status": previous.get("status", "failed"), "error": message},
                                       indent=2, sort_keys=True) + "\n").encode())
    except (OSError, ValueError):
        pass


def remove_unused_run_dir(run_dir):
    """Remove the directory Hydra made for a run that never started (empty but for Hydra's own
    files), and its parents below the working directory that are left empty (runs/<date>/)."""
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - {".hydra", "train.log"}:
        return
    log = run_dir / "train.log"
    if log.is_file() and log.stat().st_size:
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    log.unlink(missing_ok=True)
    run_dir.rmdir()
    cwd = Path.cwd().resolve()
    for directory in run_dir.resolve().parents:
        if cwd not in directory.parents or any(directory.iterdir()):
            break
        directory.rmdir()


# ----- command line -----
def with_default_dataset(argv):
    """`model=<name>` without `dataset=` (nor a preset, which sets its own) trains on DEFAULT_DATASET,
    added to the overrides so that the run's saved overrides, and so its resume, name it."""
    keys = [sweep.override_key(arg) if "=" in arg else None for arg in argv]
    if "model" not in keys or {"dataset", "experiment"} & set(keys):
        return argv
    after = keys.index("model") + 1  # beside it: argparse takes the overrides as one run of positionals
    return [*argv[:after], f"dataset={DEFAULT_DATASET}", *argv[after:]]


def with_resume_overrides(argv):
    """`resume=<run dir>` (or a checkpoint inside one) continues that run in its own directory: its
    saved overrides come first (the command line's win) and hydra.run.dir points at it."""
    resume = next((arg.split("=", 1)[1] for arg in reversed(argv)
                   if sweep.override_key(arg) == "resume" and "=" in arg), None)
    if resume in (None, "", "null"):
        return argv
    path = Path(resume).expanduser()
    if "-m" in argv or "--multirun" in argv:
        return with_sweep_resume_overrides(argv, path)
    if not path.exists():
        raise UsageError(f"no run directory or checkpoint file at {path}")
    run_dir = path if path.is_dir() else run_dir_of_checkpoint(path)
    saved = run_dir / ".hydra" / "overrides.yaml" if run_dir else None
    if saved is None or not saved.is_file():
        return argv  # a checkpoint from elsewhere: the command line gives the config
    given = {sweep.override_key(arg) for arg in argv if "=" in arg}
    # a group chosen anew (agent=dqn) takes none of the saved options of that group along
    regrouped = tuple(f"{key}." for key in given if key in GROUPS)

    def kept(override):
        key = sweep.override_key(override)
        return key not in given | {"resume"} and not key.startswith(regrouped)
    previous = [o for o in yaml.safe_load(saved.read_text()) or [] if kept(o)]
    run_dir_override = [] if "hydra.run.dir" in given else [f"hydra.run.dir={run_dir}"]
    return [*previous, *argv, *run_dir_override]


def with_sweep_resume_overrides(argv, sweep_dir):
    """`-m resume=<sweep dir>` continues a sweep in its directory with its saved overrides: completed
    jobs are kept, the others resume from their checkpoints. The command line may add only what job
    directory names leave out (quiet, device, checkpointing): anything else would be another sweep."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        raise UsageError(f"-m resume={sweep_dir}: no sweep there (no multirun.yaml); resume=<run dir> continues "
                         f"one run, without -m")
    hydra_cfg = OmegaConf.load(saved).hydra
    allowed = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    changed = [arg for arg in argv
               if "=" in arg and sweep.override_key(arg) not in allowed and not arg.startswith("hydra")]
    if changed:
        raise UsageError(f"-m resume={sweep_dir} continues that sweep as it was; it cannot change {' '.join(changed)} "
                         f"(allowed: {', '.join(sorted(allowed - {'resume'}))}); start a new sweep for that")
    given = {sweep.override_key(arg) for arg in argv if "=" in arg}
    previous = [o for o in hydra_cfg.overrides.task if sweep.override_key(o) not in given]
    return [*argv, *previous, *([] if "hydra.sweep.dir" in given else [f"hydra.sweep.dir={sweep_dir}"])]


def plugin_options(group, options):
    """The launchers or sweepers that work here, and those an extra brings (`options`: what Hydra found)."""
    presets = {path.stem: f"{group}/{yaml.safe_load(path.read_text())['defaults'][0]}"
               for path in (CONF_DIR / group).glob("*.yaml")}
    missing = {}  # extra -> options it brings
    for name, config in [*presets.items(), *((c.rpartition("/")[2], c) for c in PLUGIN_CONFIGS)]:
        if config.startswith(group + "/") and config in PLUGIN_CONFIGS and config.rpartition("/")[2] not in options:
            missing.setdefault(PLUGIN_CONFIGS[config][1], []).append(name)
    absent = {name for names in missing.values() for name in names}
    bring = "; ".join(f"pip install -e '.[{extra}]' brings {', '.join(sorted(names))}"
                      for extra, names in sorted(missing.items()))
    return f"installed: {', '.join(sorted(set(options) - absent))}" + (f"; {bring}" if bring else "")


def describe_error(error):
    """One line for a Hydra composition error."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        if error.missing_cfg_file in PLUGIN_CONFIGS:
            package, extra = PLUGIN_CONFIGS[error.missing_cfg_file]
            return (f"{error.missing_cfg_file} is provided by the {package} plugin, which is not installed: "
                    f"pip install -e '.[{extra}]' (or pip install {package})")
        if error.options is not None and group in ("hydra/launcher", "hydra/sweeper"):
            return f"unknown {group} {option!r}; {plugin_options(group, error.options)}"
        if error.options is not None:
            options = [o for o in error.options if not o.endswith("_schema")]
            return f"unknown {group} {option!r}; available: {', '.join(options) or 'none'}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else type(error).__name__
    if message.endswith("raised while composing config:") and len(lines) > 1:
        # a bad value in a yaml file: the first line names the file, the next the value, a `full_key:` line the key
        where = message.split(":", 1)[0]
        key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
        return f"{where}: {key + ': ' if key else ''}{lines[1]}"
    if isinstance(error, OverrideParseException):
        return f"cannot parse the override {error.override!r}: {message}"
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):
        message = f"{message.rstrip('.')}: {str(cause).splitlines()[0]}"
        schema = getattr(cause, "object_type", None)
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and dataclasses.is_dataclass(schema):
            keys = [f.name for f in dataclasses.fields(schema) if f.name != "_target_"]  # Hydra's, not the user's
            message += f" (allowed keys: {', '.join(keys)})"
    return message


def compose_failing_jobs():
    """A sweep job whose overrides cannot be composed (`agent.lr=0.1,abc`) fails alone, like a job
    whose values `validate()` refuses: Hydra composes each job in the launcher and would end the
    whole sweep on the first such error. Its config is composed without its overrides, named by
    them, and carries the reason to the job (an env var Hydra sets around the task, also for
    launchers that run jobs elsewhere), where `main` fails it with that line."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    load = ConfigLoaderImpl.load_sweep_config
    if getattr(load, "lab_wrapped", False):
        return

    def load_sweep_config(self, master_config, sweep_overrides):
        try:
            return load(self, master_config, sweep_overrides)
        except (ConfigCompositionException, OverrideParseException) as e:
            config = load(self, master_config, [])
            naming = config.hydra.job.config.override_dirname  # as Hydra joins them
            kept = sorted(o for o in sweep_overrides if sweep.override_key(o) not in set(naming.exclude_keys))
            with open_dict(config):
                config.hydra.overrides.task = list(sweep_overrides)
                config.hydra.job.override_dirname = naming.item_sep.join(kept).replace("=", naming.kv_sep)
                config.hydra.job.env_set[JOB_ERROR] = describe_error(e)
            return config
    load_sweep_config.lab_wrapped = True
    ConfigLoaderImpl.load_sweep_config = load_sweep_config


def quiet_sweep_plugins():
    """The Optuna sweeper's libraries talk on the console: Optuna logs each study at INFO and warns
    that parts of it are experimental, alembic (under its storage) announces its plugins. Silenced
    so that the sweep's own lines are what the user sees; their errors still show."""
    import importlib.util
    import logging
    import warnings
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if importlib.util.find_spec("optuna") is not None:
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _fail(message, status):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def cli():
    """The `lab-train` command: Hydra's main with one-line errors."""
    register_configs()
    try:
        sys.argv = [sys.argv[0], *with_default_dataset(with_resume_overrides(sys.argv[1:]))]
    except UsageError as e:
        _fail(str(e), 2)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing; the errors are reported below
    if "-m" in sys.argv or "--multirun" in sys.argv:
        quiet_sweep_plugins()
        compose_failing_jobs()
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as e:
        _fail(describe_error(e), 2)
    if sweep.FAILED:
        _fail(f"{len(sweep.FAILED)} sweep job(s) failed: {', '.join(str(d) for d, _ in sweep.FAILED)}", 1)


if __name__ == "__main__":
    cli()
