"""Runs of an agent for its tests: the config from a conf/agent preset, training in a run directory
(optionally stopped as a Ctrl-C would), and the model of the last checkpoint."""
import pathlib
from itertools import chain, repeat

from omegaconf import OmegaConf

import core
from core.runtime.run import Run

ROOT = pathlib.Path(__file__).resolve().parents[1]


def agent_cfg(agent, preset=None, env=None, seed=0, eval_episodes=10, **overrides):
    """The config `agent.train` takes: conf/agent/<preset>.yaml (None: the Config's defaults), on CartPole-v1
    also conf/tuned/<preset>_cartpole.yaml (as `agent=<preset> env=cartpole` composes it), with `overrides`, on
    CartPole-v1 (one env, SyncVectorEnv) with the keys of `env` changed."""
    values = OmegaConf.load(ROOT / "conf" / "agent" / f"{preset}.yaml") if preset else OmegaConf.create()
    values.pop("defaults", None)
    env = {"id": "CartPole-v1", "num_envs": 1, "vectorization": "sync", "max_episode_steps": None, **(env or {})}
    tuned = ROOT / "conf" / "tuned" / f"{preset}_cartpole.yaml"
    tuned = OmegaConf.load(tuned).get("agent", {}) if preset and env["id"] == "CartPole-v1" and tuned.is_file() else {}
    agent_values = OmegaConf.merge(OmegaConf.structured(agent.Config), values, tuned, overrides)
    return OmegaConf.create({"seed": seed, "device": "cpu", "eval_episodes": eval_episodes, "checkpoint_every": 0,
                             "env": env, "agent": agent_values})


def train_agent(agent, cfg, run_dir, resume=None, stop_after=None):
    """`agent.train` in `run_dir`; with `stop_after`, the run is asked to stop after that many units."""
    with Run(run_dir, config=OmegaConf.to_container(cfg, enum_to_str=True), seed=cfg.seed, quiet=True,
             resume=resume) as run:
        if stop_after is not None:
            answers = chain(repeat(False, stop_after), repeat(True))
            run.should_stop = lambda: next(answers)
        return agent.train(cfg, run)


def last_model(run_dir):
    return core.load(pathlib.Path(run_dir) / "checkpoints" / "last.ckpt")["model"]
