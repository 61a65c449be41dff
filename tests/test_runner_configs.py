"""Every config in conf/ composes (Hydra's compose API) and passes the checks train.py runs before training."""
import functools
import importlib.util
import pathlib
import shutil
from enum import Enum

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from scripts import trainers
from scripts import train

CONF = pathlib.Path(train.CONF_DIR)
train.register_configs()


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# agent -> the env presets it trains on (the others need a time limit or action masks it lacks)
AGENT_ENVS = {"reinforce": ["cartpole", "cartpole_v0", "gridworld", "maze"]}
PAIRS = [(agent, env) for agent in trainers.options("agent") for env in AGENT_ENVS.get(agent, options("env"))]
MODEL_PAIRS = [(model, dataset) for model in options("model") for dataset in options("dataset")]
PLUGIN_PRESETS = {"hydra/launcher": {"local_parallel": "hydra_joblib_launcher", "slurm": "hydra_submitit_launcher",
                                     "ray_cluster": "hydra_ray_launcher"},
                  "hydra/sweeper": {"optuna_search": "hydra_optuna_sweeper"}}


def plugin_installed(module):
    try:
        return importlib.util.find_spec(f"hydra_plugins.{module}") is not None
    except ModuleNotFoundError:  # no hydra_plugins package at all
        return False


def compose_config(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@functools.lru_cache(maxsize=None)
def composed(*overrides):
    """A composed config, shared between tests (each compose costs about 0.25 s); copy before changing."""
    return compose_config(list(overrides))


def check(cfg):
    """What train.py does with a composed config before it trains: select, validate, resolve."""
    kind, name, module = train.select_algorithm(dict(cfg.hydra.runtime.choices))
    train.validate(cfg, kind)
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    return kind, module


def test_every_registered_agent_has_a_config_and_every_agent_config_a_module():
    assert set(options("agent")) == set(trainers.options("agent"))


@pytest.mark.parametrize("agent", list(trainers.options("agent")))
def test_agent_configs_compose(agent):
    env = AGENT_ENVS.get(agent, ["cartpole"])[0]
    cfg = composed(f"agent={agent}", f"env={env}")
    kind, module = check(cfg)
    assert kind == "agent" and module is trainers.options("agent")[agent]
    assert isinstance(OmegaConf.to_object(cfg.agent), module.Config)  # the schema types the yaml


def test_agent_env_pairs_pass_the_checks():
    """The agent and env sections compose independently (packages `agent` and `env`), so each pair
    is the agent's composed config with the env's composed section put in."""
    for agent, env in PAIRS:
        cfg = composed(f"agent={agent}", f"env={AGENT_ENVS.get(agent, ['cartpole'])[0]}").copy()
        cfg.env = composed(f"env={env}").env
        cfg.hydra.runtime.choices.env = env
        check(cfg)
        assert cfg.env.id == composed(f"env={env}").env.id


@pytest.mark.parametrize("model", options("model"))
def test_model_configs_compose(model):
    kind, module = check(composed(f"model={model}", "dataset=digits"))
    assert kind == "model" and isinstance(OmegaConf.to_object(composed(f"model={model}", "dataset=digits").model),
                                          module.Config)


def test_model_dataset_pairs_pass_the_checks():
    """The model and dataset sections compose independently (packages `model` and `dataset`), so each
    pair is the model's composed config with the dataset's composed section put in."""
    for model, dataset in MODEL_PAIRS:
        cfg = composed(f"model={model}", "dataset=digits").copy()
        cfg.dataset = composed(f"dataset={dataset}").dataset
        cfg.hydra.runtime.choices.dataset = dataset
        check(cfg)


@pytest.mark.parametrize("dataset", options("dataset"))
def test_dataset_configs_compose(dataset):
    cfg = composed(f"dataset={dataset}")
    train.DatasetConfig(**OmegaConf.to_container(cfg.dataset, resolve=True)).validate()
    assert cfg.dataset.name == dataset
    # no development path: null is $LAB_DATA_DIR, else the user cache dir, decided when the data is loaded
    assert cfg.dataset.root is None
    assert cfg.dataset.download == (dataset != "digits")


@pytest.mark.parametrize("group", ["optim", "logger"])
def test_optim_and_logger_presets_compose(group):
    for option in options(group):
        cfg = compose_config(["model=vae", "dataset=digits", f"{group}={option}"])
        check(cfg)
        assert cfg[group] is not None


@pytest.mark.parametrize("overrides, message", [
    (["agent=ppo", "env=cartpole", "optim=adam"], r"^optim=adam is not used by agent=ppo \(its settings are under "
                                                  r"agent\.\*\); remove it$"),
    (["agent=dqn", "env=cartpole", "dataset=digits"], "dataset=digits is not used by agent=dqn"),
    (["model=vae", "dataset=digits", "env=cartpole"], "env=cartpole is not used by model=vae"),
])
def test_a_group_the_trainer_does_not_use_is_refused(overrides, message):
    cfg = compose_config(overrides)
    with pytest.raises(train.UsageError, match=message):
        train.select_algorithm(dict(cfg.hydra.runtime.choices))


def test_optimizer_presets_build_optimizers():
    from agents.networks import mlp
    from core import optim
    for option in options("optim"):
        cfg = compose_config([f"optim={option}"])
        opt = optim.create(mlp(2, [3], 1).parameters(), **cfg.optim)
        assert type(opt).__name__.lower() == option and opt.param_groups[0]["lr"] == cfg.optim.lr


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_presets_compose(experiment):
    try:
        check(composed(f"experiment={experiment}"))
    except train.UsageError as error:  # only a missing optional extra (e.g. ale-py for Atari) may stop one
        assert "pip install" in str(error), str(error)


@pytest.mark.parametrize("group,preset", [(g, p) for g, presets in PLUGIN_PRESETS.items() for p in presets])
def test_launcher_and_sweeper_presets_compose_or_name_the_extra(group, preset):
    assert (CONF / group / f"{preset}.yaml").is_file()
    overrides = ["agent=reinforce", "env=cartpole", f"{group}={preset}"]
    if plugin_installed(PLUGIN_PRESETS[group][preset]):
        cfg = compose_config(overrides)
        assert cfg.hydra[group.split("/")[1]]._target_.startswith("hydra_plugins.")
        return
    with pytest.raises(MissingConfigException) as error:
        compose_config(overrides)
    message = train.describe_error(error.value)
    extra = "slurm" if preset == "slurm" else "ray" if preset == "ray_cluster" else "sweep"
    assert "plugin, which is not installed" in message and f"pip install -e '.[{extra}]'" in message


def test_unknown_key_and_wrong_type_fail_at_compose_time_with_one_line():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["agent=reinforce", "env=cartpole", "agent.learning_rate=0.1"])
    message = train.describe_error(error.value)
    assert message.startswith("Could not override 'agent.learning_rate': Key 'learning_rate' not in 'Config'")
    assert "allowed keys: total_timesteps, episodes_per_batch" in message and "\n" not in message
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["agent=reinforce", "env=cartpole", "agent.episodes_per_batch=many"])
    assert train.describe_error(error.value) == ("Error merging override agent.episodes_per_batch=many: Value 'many' "
                                                 "of type 'str' could not be converted to Integer")
    with pytest.raises(ConfigCompositionException):
        compose_config(["seed=1.5"])


def test_unknown_group_options_list_the_allowed_ones():
    with pytest.raises(MissingConfigException) as error:
        compose_config(["agent=reinforcee", "env=cartpole"])
    assert train.describe_error(error.value) == f"unknown agent 'reinforcee'; available: {', '.join(options('agent'))}"
    with pytest.raises(MissingConfigException) as error:
        compose_config(["agent=reinforce", "env=pong"])
    assert train.describe_error(error.value) == f"unknown env 'pong'; available: {', '.join(options('env'))}"


@pytest.mark.parametrize("overrides,message", [
    ([], "nothing to train: pass agent=<name> env=<name>"),
    (["agent=reinforce"], "agent=reinforce needs env=<name>; envs: acrobot, bandit, cartpole"),
    (["dataset=digits"], "nothing to train"),
])
def test_incomplete_choices_are_usage_errors(overrides, message):
    cfg = compose_config(overrides)
    with pytest.raises(train.UsageError, match=message):
        train.select_algorithm(dict(cfg.hydra.runtime.choices))


@pytest.mark.parametrize("override,message", [
    ("agent.lr=0", "agent.lr must be a positive finite number, got 0.0"),
    ("agent.gamma=1.5", "agent.gamma must be in [0, 1], got 1.5"),
    ("env.id=CartPole-v7", "unknown env id 'CartPole-v7'; did you mean CartPole-v1"),
    ("env.num_envs=0", "env.num_envs must be >= 1, got 0"),
    ("env.native_dtype=float32", "env.native_dtype=float32 needs env.vectorization=native, got sync"),
    ("eval_episodes=0", "eval_episodes must be >= 1, got 0"),
    ("device=gpu", "unknown device 'gpu': expected 'cpu', 'cuda' or 'cuda:N'"),
    ("optim=adam optim.lr=-0.1", "optim.lr must be a positive finite number, got -0.1"),
])
def test_semantic_errors_fail_validation_with_one_line(override, message):
    cfg = compose_config(["agent=reinforce", "env=cartpole", *override.split()])
    with pytest.raises(train.UsageError) as error:
        train.validate(cfg, "agent")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize("overrides,bad,allowed", [
    ("agent=reinforce env=cartpole agent.baseline=critic", "critic", "none, mean, value"),
    ("agent=dqn env=cartpole agent.vectorization=threads", "threads", "sync, async, native"),
    ("agent=a3c env=cartpole agent.vectorization=async", "async", "sync, native"),
    ("agent=reinforce env=cartpole env.native_dtype=int8", "int8", "float64, float32"),
    ("model=gan_mtf dataset=digits model.g_activations=[relu,swish]", "swish", "linear, relu, leaky_relu, selu, "
                                                                               "elu, tanh, sigmoid"),
    ("model=vae dataset=digits dataset.normalize=1", "1", "01, tanh"),
    ("model=supervised dataset=digits model.keep_best=val/acc", "val/acc", "val/loss, val/accuracy"),
    ("model=vae dataset=digits optim=adam optim.name=nadam", "nadam", "adam, sgd, rmsprop"),
])
def test_a_choice_outside_its_set_fails_at_compose_time_with_one_line(overrides, bad, allowed):
    overrides = overrides.split()
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(overrides)
    assert train.describe_error(error.value) == (f"Error merging override {overrides[-1]}: Invalid value '{bad}', "
                                                 f"expected one of [{allowed}]")


def test_a_bad_choice_in_a_yaml_file_names_the_file_and_the_key(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "agent" / "ppo_swish.yaml").write_text("defaults:\n  - ppo_schema\n  - _self_\n\nactivation: swish\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as error:
            compose("config", overrides=["agent=ppo_swish", "env=cartpole"])
    assert train.describe_error(error.value) == ("In 'agent/ppo_swish': agent.activation: Invalid value 'swish', "
                                                 "expected one of [tanh, relu, elu, leaky_relu, gelu]")


def test_choices_are_the_strings_users_type():
    """Names that are no Python identifiers ("01", "async", "val/loss") work, and a member compares, formats
    and prints as its string (tests/test_runner_cli.py checks that a checkpoint stores the plain string)."""
    cfg = compose_config(["model=supervised", "dataset=digits", "dataset.normalize=01", "model.keep_best=val/loss"])
    assert cfg.dataset.normalize == "01" and cfg.model.keep_best == "val/loss"
    assert f"{cfg.model.keep_best}" == "val/loss" and repr(cfg.dataset.normalize) == "'01'"
    env = compose_config(["agent=ppo", "env=cartpole", "env.vectorization=async"]).env
    assert env.vectorization == "async" and isinstance(OmegaConf.to_object(env).vectorization, Enum)


def test_resume_overrides_reuse_the_run_and_its_saved_overrides(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- agent=reinforce\n- env=cartpole\n- seed=3\n- resume=x\n")
    argv = train.with_resume_overrides([f"resume={tmp_path}", "seed=4"])
    assert argv == ["agent=reinforce", "env=cartpole", f"resume={tmp_path}", "seed=4", f"hydra.run.dir={tmp_path}"]
    assert train.with_resume_overrides(["agent=reinforce"]) == ["agent=reinforce"]
    with pytest.raises(train.UsageError, match="no sweep there .*; resume=<run dir> continues one run, without -m"):
        train.with_resume_overrides(["-m", f"resume={tmp_path}"])  # a run directory, not a sweep's


@pytest.mark.parametrize("overrides, module", [(["agent=ppo_native", "env=cartpole"], "agents.ppo"),
                                               (["model=dcgan", "dataset=digits"], "gans.gan")])
def test_a_composed_trainer_section_instantiates_its_typed_config(overrides, module):
    from hydra.utils import instantiate
    cfg = compose_config(overrides)
    section = cfg.agent if "agent" in overrides[0] else cfg.model
    args = instantiate(section)  # Hydra's own mechanism: the schema's _target_ names the trainer's Config
    assert type(args).__module__ == module and type(args).__name__ == "Config"
    assert trainers.options("agent" if "agent" in overrides[0] else "model")[overrides[0].split("=")[1]].__name__ == module
