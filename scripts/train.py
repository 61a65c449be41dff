"""Train an agent or a generative model from the Hydra configs in conf/.

    python scripts/train.py agent=reinforce env=cartpole              # RL
    python scripts/train.py model=<name> dataset=mnist                # generative
    python scripts/train.py experiment=<id>                           # a chapter preset
    python scripts/train.py -m agent=reinforce env=cartpole seed=0,1,2  # a sweep
    python scripts/train.py resume=runs/2024-05-01/12-00-00           # continue a run in its own directory

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
from omegaconf import OmegaConf  # noqa: E402
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException  # noqa: E402

import agents  # noqa: E402
import gans  # noqa: E402
from core.runtime.run import ConfigError, NonFiniteError, Run, run_dir_of_checkpoint  # noqa: E402
from core.serialization import CheckpointError  # noqa: E402
from scripts import book_checks  # noqa: E402

# the books' fixture checks are no agent, but run as one (agent=book_check env=cartpole) until dispatch
# discovers trainers
agents.REGISTRY["book_check"] = book_checks

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("agent", "env", "model", "dataset", "optim", "logger", "experiment")
VECTORIZATIONS = ("sync", "async", "native")

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


class UsageError(ValueError):
    """Something the user passed cannot work: reported in one line, exit status 2."""


# ----- schemas of the shared groups (the algorithms' own Config classes live in their modules) -----
@dataclass
class RunConfig:
    seed: int = 0
    device: str = "cpu"
    resume: Optional[str] = None
    quiet: bool = False
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    eval_episodes: int = 10
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
        for name in ("checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_episodes < 1:
            raise ValueError(f"eval_episodes must be >= 1, got {self.eval_episodes}")


@dataclass
class EnvConfig:
    """An env for envs.factory: `id`, how many copies and how they step, then the wrapper options
    of `envs.factory.make_env` (see its docstring; agents.wrapper_options(cfg.env) collects them)."""
    id: str = "CartPole-v1"
    num_envs: int = 1
    vectorization: str = "sync"                # sync | async | native
    native_dtype: str = "float64"              # native CartPole: float64 (gymnasium's numbers) | float32 (faster)
    max_episode_steps: Optional[int] = None    # None: the registered time limit
    reward_scale: Optional[float] = None
    frame_skip: Optional[int] = None
    frame_stack: Optional[int] = None
    atari: Any = "auto"                        # auto | true | false: Atari preprocessing
    terminal_on_life_loss: bool = False

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
        if self.vectorization not in VECTORIZATIONS:
            raise ValueError(f"env.vectorization must be one of {', '.join(VECTORIZATIONS)}, "
                             f"got {self.vectorization!r}")
        if self.native_dtype not in ("float64", "float32"):
            raise ValueError(f"env.native_dtype must be float64 or float32, got {self.native_dtype!r}")
        if self.native_dtype != "float64" and self.vectorization != "native":
            raise ValueError(f"env.native_dtype={self.native_dtype} needs env.vectorization=native, "
                             f"got {self.vectorization}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"env.max_episode_steps must be >= 1 or null, got {self.max_episode_steps}")


@dataclass
class DatasetConfig:
    name: str = "digits"
    root: Optional[str] = None                 # None: $LAB_DATA_DIR, else ~/.cache/lab/data
    split: str = "train"
    normalize: Optional[str] = "01"            # 01 | tanh | null (raw 0..255)
    classes: Optional[List[int]] = None
    image_size: Optional[int] = None
    limit: Optional[int] = None
    download: bool = False

    def validate(self):
        from gans.datasets import DATASETS, NORMALIZATIONS, SPLITS
        if self.name not in DATASETS:
            raise ValueError(f"unknown dataset.name {self.name!r}; allowed: {', '.join(DATASETS)}")
        if self.split not in SPLITS:
            raise ValueError(f"dataset.split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"dataset.normalize must be one of 01, tanh, null, got {self.normalize!r}")
        for name in ("image_size", "limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"dataset.{name} must be >= 1 or null, got {getattr(self, name)}")


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    histogram_every: int = 0                   # parameter/gradient histograms every N steps; 0: never

    def validate(self):
        if self.histogram_every < 0:
            raise ValueError(f"logger.histogram_every must be >= 0, got {self.histogram_every}")


@dataclass
class OptimConfig:
    name: str = "adam"
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
    name: str = "sgd"
    lr: float = 1e-2
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False


@dataclass
class RMSpropConfig(OptimConfig):
    name: str = "rmsprop"
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
    for group, registry in (("agent", agents.REGISTRY), ("model", gans.REGISTRY)):
        for name, module in registry.items():
            cs.store(group=group, name=f"{name}_schema", node=module.Config)


def group_options(group):
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


# ----- what to train -----
def select_algorithm(choices):
    """(kind, name, module) from the group choices; UsageError when the choice is incomplete."""
    agent, env, model, dataset = (choices.get(g) for g in ("agent", "env", "model", "dataset"))
    if agent and model:
        raise UsageError(f"choose either agent+env (RL) or model+dataset (generative), got agent={agent} and "
                         f"model={model}")
    if agent:
        if not env:
            raise UsageError(f"agent={agent} needs env=<name>; envs: {', '.join(group_options('env'))}")
        kind, name, registry = "agent", agent, agents.REGISTRY
    elif model:
        if not dataset:
            raise UsageError(f"model={model} needs dataset=<name>; datasets: {', '.join(group_options('dataset'))}")
        kind, name, registry = "model", model, gans.REGISTRY
    else:
        raise UsageError("nothing to train: pass agent=<name> env=<name> (agents: "
                         f"{', '.join(group_options('agent'))}; envs: {', '.join(group_options('env'))}) or "
                         f"model=<name> dataset=<name> (models: {', '.join(group_options('model')) or 'none yet'}; "
                         f"datasets: {', '.join(group_options('dataset'))})")
    if name not in registry:
        package = "agents" if kind == "agent" else "gans"
        raise UsageError(f"{kind} {name!r} has a config but no module in {package}.REGISTRY "
                         f"(registered: {', '.join(registry) or 'none'})")
    return kind, name, registry[name]


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


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")  # absolute: also as `lab-train`
def main(cfg):
    """Hydra's task function: train, report errors in one line (raised on in multirun, where the
    sweeper decides), return the main metric."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return train_from_config(cfg, multirun)
    except UsageError as e:
        if not multirun:
            remove_unused_run_dir(Path(HydraConfig.get().runtime.output_dir))
        _fail(str(e), 2)
    except NonFiniteError as e:
        if multirun:
            raise
        _fail(str(e), 1)


def train_from_config(cfg, multirun):
    hydra_cfg = HydraConfig.get()
    choices = {group: hydra_cfg.runtime.choices.get(group) for group in GROUPS}
    kind, name, module = select_algorithm(choices)
    validate(cfg, kind)
    try:
        config = {**OmegaConf.to_container(cfg, resolve=True), "choices": choices}
    except OmegaConfBaseException as e:
        raise UsageError(str(e).splitlines()[0]) from None
    logger = cfg.logger or {}
    try:
        run = Run(hydra_cfg.runtime.output_dir, config=config, seed=cfg.seed, device=cfg.device,
                  quiet=cfg.quiet or multirun, resume=cfg.resume,
                  keep_checkpoints=cfg.keep_checkpoints, tensorboard=logger.get("tensorboard", True),
                  histogram_every=logger.get("histogram_every", 0))
    except (OSError, CheckpointError) as e:
        raise UsageError(str(e)) from None
    with run:
        try:
            metrics = module.train(cfg, run)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        except NonFiniteError as e:
            run.finish({"error": str(e)}, status="non-finite")
            raise
        run.finish(metrics, status="interrupted" if run.should_stop() else "completed")
    return main_metric(kind, module, metrics)


def remove_unused_run_dir(run_dir):
    """Remove the directory Hydra made for a run that never started (only .hydra/ and an empty log),
    and its parents below the working directory that are left empty (runs/<date>/)."""
    log = run_dir / f"{HydraConfig.get().job.name}.log"
    if {p.name for p in run_dir.iterdir()} <= {".hydra", log.name} and not (log.is_file() and log.stat().st_size):
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
        log.unlink(missing_ok=True)
        run_dir.rmdir()
        cwd = Path.cwd().resolve()
        for directory in run_dir.resolve().parents:
            if cwd not in directory.parents or any(directory.iterdir()):
                break
            directory.rmdir()


# ----- command line -----
def _override_key(override):
    return override.split("=", 1)[0].lstrip("+~")


def with_resume_overrides(argv):
    """`resume=<run dir>` (or a checkpoint inside one) continues that run in its own directory: its
    saved overrides come first (the command line's win) and hydra.run.dir points at it."""
    resume = next((arg.split("=", 1)[1] for arg in reversed(argv) if _override_key(arg) == "resume" and "=" in arg),
                  None)
    if resume in (None, "", "null"):
        return argv
    if "-m" in argv or "--multirun" in argv:
        raise UsageError("resume=... continues one run; it cannot be combined with -m/--multirun")
    path = Path(resume).expanduser()
    run_dir = path if path.is_dir() else run_dir_of_checkpoint(path) if path.is_file() else None
    saved = run_dir / ".hydra" / "overrides.yaml" if run_dir else None
    if saved is None or not saved.is_file():
        return argv  # a checkpoint from elsewhere: the command line gives the config, Run reports a bad path
    given = {_override_key(arg) for arg in argv if "=" in arg}
    previous = [o for o in yaml.safe_load(saved.read_text()) or [] if _override_key(o) not in given | {"resume"}]
    run_dir_override = [] if "hydra.run.dir" in given else [f"hydra.run.dir={run_dir}"]
    return [*previous, *argv, *run_dir_override]


def describe_error(error):
    """One line for a Hydra composition error."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        if error.missing_cfg_file in PLUGIN_CONFIGS:
            package, extra = PLUGIN_CONFIGS[error.missing_cfg_file]
            return (f"{error.missing_cfg_file} is provided by the {package} plugin, which is not installed: "
                    f"pip install -e '.[{extra}]' (or pip install {package})")
        if error.options is not None:
            options = [o for o in error.options if not o.endswith("_schema")]
            return f"unknown {group} {option!r}; available: {', '.join(options) or 'none'}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else type(error).__name__
    if isinstance(error, OverrideParseException):
        return f"cannot parse the override {error.override!r}: {message}"
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException):
        message = f"{message.rstrip('.')}: {str(cause).splitlines()[0]}"
        schema = getattr(cause, "object_type", None)
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and dataclasses.is_dataclass(schema):
            message += f" (allowed keys: {', '.join(f.name for f in dataclasses.fields(schema))})"
    return message


def _fail(message, status):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def cli():
    """The `lab-train` command: Hydra's main with one-line errors."""
    register_configs()
    try:
        sys.argv = [sys.argv[0], *with_resume_overrides(sys.argv[1:])]
    except UsageError as e:
        _fail(str(e), 2)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing; the errors are reported below
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as e:
        _fail(describe_error(e), 2)
    except NonFiniteError as e:  # a multirun job diverged and the sweeper gave up
        _fail(str(e), 1)


if __name__ == "__main__":
    cli()
