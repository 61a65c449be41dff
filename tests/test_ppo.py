"""PPO: the clipped objective's gradient by hand, learning CartPole (native preset and the zoo's
settings), determinism, exact resume, schedules and diagnostics in the logs, bad input."""
import functools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from agent_runs import ROOT, agent_cfg, last_model, train_agent
from omegaconf import OmegaConf, ValidationError

import core
import core.functional as F
from agents import ppo
from agents.actor_critic import ActorCritic
from core.runtime.events import read_scalars
from core.runtime.run import ConfigError, Run
from core.tensor import Tensor

make_cfg = functools.partial(agent_cfg, ppo)
train = functools.partial(train_agent, ppo)


def test_clipped_surrogate_gradient_by_hand():
    # ratios 1, 1.5, 0.5, 1.1, 1.5, 0.5 with clip 0.2; the per-sample objective is max(-A r, -A clip(r)):
    #  r=1,   A= 1: -1     (inside the range)           d/dlogratio = -A r = -1
    #  r=1.5, A= 1: -1.2   (clipped: -1.2 > -1.5)       0
    #  r=0.5, A=-1:  0.8   (clipped: 0.8 > 0.5)         0
    #  r=1.1, A=-2:  2.2   (inside the range)           2.2
    #  r=1.5, A=-1:  1.5   (outside but unclipped wins) 1.5
    #  r=0.5, A= 1: -0.5   (outside but unclipped wins) -0.5
    ratio = np.array([1.0, 1.5, 0.5, 1.1, 1.5, 0.5])
    advantages = np.array([1.0, 1.0, -1.0, -2.0, -1.0, 1.0])
    logratio = core.tensor(np.log(ratio), requires_grad=True)
    loss = F.ppo_clip_loss(logratio, advantages, 0.2)
    loss.backward()
    assert loss.item() == pytest.approx((-1 - 1.2 + 0.8 + 2.2 + 1.5 - 0.5) / 6)
    np.testing.assert_allclose(logratio.grad.data, np.array([-1, 0, 0, 2.2, 1.5, -0.5]) / 6, rtol=1e-12)


def test_clipped_objective_gradient_reaches_the_logits():
    # uniform two-action policy, action 0 taken: d log pi(0) / d logits = (1 - 0.5, -0.5)
    ratio = np.array([1.0, 1.5, 1.1])
    advantages = np.array([1.0, 1.0, -2.0])
    logits = core.tensor(np.zeros((3, 2)), requires_grad=True)
    logprobs = core.where(np.array([[True, False]] * 3), core.log_softmax(logits, -1), 0.0).sum(-1)
    old = Tensor._make(np.log(0.5) - np.log(ratio))
    loss = F.ppo_clip_loss(logprobs - old, advantages, 0.2)
    loss.backward()
    per_sample = np.array([-1.0, 0.0, 2.2]) / 3
    np.testing.assert_allclose(logits.grad.data, per_sample[:, None] * [0.5, -0.5], rtol=1e-12)


@pytest.mark.parametrize("clip_range_vf", [None, 0.1])
@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
def test_fused_categorical_loss_matches_the_readable_one(clip_range_vf, ent_coef):
    rng = np.random.default_rng(0)
    model = ActorCritic(4, 3, generator=core.Generator(0), init="torch").double()
    n = 64
    batch = {"obs": rng.standard_normal((n, 4)), "actions": rng.integers(0, 3, n),
             "logprobs": np.log(rng.uniform(0.2, 0.5, n)), "values": rng.standard_normal(n),
             "advantages": rng.standard_normal(n), "returns": rng.standard_normal(n)}
    args = ppo.Config(clip_range_vf=clip_range_vf, ent_coef=ent_coef, vf_coef=0.7)
    results = []
    for loss_fn in (ppo.fused_ppo_loss, ppo.ppo_loss):
        model.zero_grad()
        loss, parts = loss_fn(model, batch, 0.2, args)
        loss.backward()
        results.append((loss.item(), parts, [p.grad.data for p in model.parameters()]))
    (fused, fused_parts, fused_grads), (plain, plain_parts, plain_grads) = results
    ratio = plain_parts["ratio"]
    assert ((ratio < 0.8) | (ratio > 1.2)).any() and ((ratio > 0.8) & (ratio < 1.2)).any()  # both regimes
    assert fused == pytest.approx(plain, rel=1e-12)
    for name in plain_parts:
        np.testing.assert_allclose(fused_parts[name], plain_parts[name], rtol=1e-12)
    for got, expected in zip(fused_grads, plain_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)


def test_native_preset_solves_cartpole(tmp_path):
    metrics = train(make_cfg("ppo_native"), tmp_path)
    assert metrics["eval/return_mean"] >= 475
    assert metrics["time/to_target_s"] < 60 and metrics["train/to_target_steps"] <= 200_000
    assert metrics["train/env_steps"] == metrics["train/to_target_steps"]  # it stopped there


@pytest.mark.slow
def test_zoo_preset_solves_cartpole_on_gymnasium_envs(tmp_path):
    metrics = train(make_cfg("ppo"), tmp_path)
    assert metrics["train/env_steps"] == 391 * 256
    assert metrics["eval/return_mean"] >= 475


def test_same_seed_same_result_and_exact_resume(tmp_path):
    cfg = make_cfg("ppo", total_timesteps=6 * 256, n_epochs=4)
    first = train(cfg, tmp_path / "a")
    second = train(cfg, tmp_path / "b")
    for key in ("eval/return_mean", "train/episodes"):
        assert first[key] == second[key]
    a, b = last_model(tmp_path / "a"), last_model(tmp_path / "b")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    train(make_cfg("ppo", seed=1, total_timesteps=6 * 256, n_epochs=4), tmp_path / "other")
    other = last_model(tmp_path / "other")
    assert not all(np.array_equal(a[k], other[k]) for k in a)

    # stopped after 3 of 6 iterations (as by Ctrl-C), then resumed: bitwise the uninterrupted run
    stopped = train(cfg, tmp_path / "c", stop_after=3)
    assert stopped["train/iterations"] == 3 and "eval/return_mean" not in stopped
    resumed = train(cfg, tmp_path / "c", resume=tmp_path / "c")
    assert resumed["train/iterations"] == 6 and resumed["eval/return_mean"] == first["eval/return_mean"]
    c = last_model(tmp_path / "c")
    assert all(np.array_equal(a[k], c[k]) for k in a)


def test_schedules_and_diagnostics_are_logged(tmp_path):
    cfg = make_cfg("ppo", total_timesteps=4 * 256, n_epochs=2)
    metrics = train(cfg, tmp_path)
    scalars = read_scalars(tmp_path)
    lr = [value for _, _, value in scalars["charts/learning_rate"]]
    clip = [value for _, _, value in scalars["charts/clip_range"]]
    np.testing.assert_allclose(lr, [1e-3, 0.75e-3, 0.5e-3, 0.25e-3], rtol=1e-6)  # linear from 1e-3 (lin_1e-3)
    np.testing.assert_allclose(clip, [0.2, 0.15, 0.1, 0.05], rtol=1e-6)
    for tag in ("losses/approx_kl", "losses/old_approx_kl", "losses/clipfrac", "losses/explained_variance",
                "losses/policy_loss", "losses/value_loss", "losses/entropy", "charts/SPS"):
        values = [value for _, _, value in scalars[tag]]
        assert len(values) == 4 and all(math.isfinite(v) for v in values), tag
    assert all(0 <= v <= 1 for _, _, v in scalars["losses/clipfrac"])
    assert [step for step, _, _ in scalars["losses/approx_kl"]] == [256, 512, 768, 1024]
    assert metrics["train/env_steps"] == 1024 and "eval/return_mean" in scalars


def test_target_kl_stops_the_epochs_early():
    rng = np.random.default_rng(0)
    model = ActorCritic(4, 2, generator=core.Generator(0))
    optimizer = core.optim.Adam(model.parameters(), lr=0.05)
    data = {"obs": rng.standard_normal((64, 4)).astype(np.float32), "actions": rng.integers(0, 2, 64),
            "logprobs": np.full(64, np.log(0.5), np.float32), "values": np.zeros(64, np.float32),
            "advantages": rng.standard_normal(64).astype(np.float32), "returns": np.ones(64, np.float32)}
    args = ppo.Config(n_epochs=10, batch_size=16, target_kl=0.01)
    stats, stopped = ppo.ppo_update(model, optimizer, data, 0.2, args, np.random.default_rng(0))
    steps = int(optimizer.state_dict()["state"][0]["step"][0])
    assert stopped and 1 <= steps < 40 and len(stats) == 7
    args.target_kl = None
    _, stopped = ppo.ppo_update(model, optimizer, data, 0.2, args, np.random.default_rng(0))
    assert not stopped and int(optimizer.state_dict()["state"][0]["step"][0]) == steps + 40


def test_value_clipping_entropy_and_shared_trunk_run(tmp_path):
    cfg = make_cfg("ppo", total_timesteps=512, n_epochs=2, clip_range_vf=0.2, ent_coef=0.01, shared=True,
                   vectorization="native", eval_episodes=2)
    metrics = train(cfg, tmp_path)
    assert metrics["train/iterations"] == 2 and metrics["eval/episodes"] == 2


def test_continuous_actions(tmp_path):
    cfg = make_cfg(env={"id": "Pendulum-v1"}, total_timesteps=256, num_envs=2, num_steps=64, batch_size=64,
                   n_epochs=1, eval_episodes=1)
    metrics = train(cfg, tmp_path / "gaussian")
    assert metrics["train/env_steps"] == 256 and -2000 < metrics["eval/return_mean"] < 0
    with pytest.raises(ConfigError, match=r"distribution='categorical' needs a Discrete action space, the env "
                                          r"has Box\(-2.0, 2.0, \(1,\), float32\)"):
        train(make_cfg(env={"id": "Pendulum-v1"}, distribution="categorical"), tmp_path / "categorical")


def test_an_episode_budget_stops_at_the_first_rollout_that_reaches_it(tmp_path):
    metrics = train(make_cfg("ppo", total_timesteps=100_000, total_episodes=20, n_epochs=1), tmp_path)
    # rollouts of 8 envs x 32 steps: the one in which the 20th episode ends is the last
    assert 20 <= metrics["train/episodes"] and metrics["train/env_steps"] < 2000


def test_bad_input_fails_clearly(tmp_path):
    with pytest.raises(ConfigError, match=r"agent.batch_size 512 is larger than a rollout \(num_steps 32 x 8 envs = 256\)"):
        train(make_cfg("ppo", batch_size=512), tmp_path)
    for changes, message in [({"lr": -1.0}, "agent.lr must be a positive finite number"),
                             ({"gae_lambda": 1.5}, r"agent.gae_lambda must be in \[0, 1\]"),
                             ({"target_return": 500.0, "eval_every": 0}, "agent.target_return needs agent.eval_every >= 1 or null"),
                             ({"total_episodes": 0}, r"agent.total_episodes must be >= 1 or null, got 0"),
                             ({"critic_lr": -1e-3}, "agent.critic_lr must be a positive finite number or null")]:
        with pytest.raises(ValueError, match=message):
            ppo.Config(**changes).validate()
    with pytest.raises(ValidationError, match=r"Invalid value 'gpu', expected one of \[sync, async, native\]"):
        OmegaConf.merge(OmegaConf.structured(ppo.Config), {"vectorization": "gpu"})


def test_cli_run_writes_metrics_and_checkpoint(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "agent=ppo_native", "env=cartpole",
                             "agent.total_timesteps=4096", "agent.target_return=null", "eval_episodes=3",
                             f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train/env_steps"] == 4096 and metrics["eval/episodes"] == 3
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.gpu
def test_native_envs_on_cupy(tmp_path, gpu_device):
    cfg = make_cfg("ppo_native", total_timesteps=4096, target_return=None, eval_episodes=3)
    cfg.device = gpu_device
    with Run(tmp_path, config=OmegaConf.to_container(cfg, enum_to_str=True), seed=0, device=gpu_device,
             quiet=True) as run:
        metrics = ppo.train(cfg, run)
    assert metrics["train/env_steps"] == 4096 and metrics["eval/return_mean"] > 0
