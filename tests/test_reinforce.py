"""REINFORCE: Géron's return helpers (FX-RL-2), the update, determinism, resume, and learning CartPole."""
import numpy as np
import pytest
from omegaconf import OmegaConf, ValidationError

import core
from agents import reinforce
from agents.networks import mlp
from core.runtime.run import ConfigError, Run


def make_cfg(env_id="CartPole-v1", seed=0, eval_episodes=5, checkpoint_every=0, max_episode_steps=None, **agent):
    schema = OmegaConf.structured(reinforce.Config)
    return OmegaConf.create({"agent": OmegaConf.merge(schema, agent), "seed": seed, "eval_episodes": eval_episodes,
                             "checkpoint_every": checkpoint_every,
                             "env": {"id": env_id, "num_envs": 1, "max_episode_steps": max_episode_steps}})


def train(tmp_path, cfg, resume=None):
    with Run(tmp_path, config=OmegaConf.to_container(cfg, enum_to_str=True), seed=cfg.seed, quiet=True,
             tensorboard=False, resume=resume, keep_checkpoints=0) as run:
        return reinforce.train(cfg, run), run


def test_discounted_returns_match_the_book():  # FX-RL-2
    np.testing.assert_allclose(reinforce.discount_rewards([10, 0, -50], 0.8), [-22, -40, -50])
    normalized = reinforce.discount_and_normalize_rewards([[10, 0, -50], [10, 20]], 0.8)
    np.testing.assert_allclose(normalized[0], [-0.28435071, -0.86597718, -1.18910299], atol=1e-8)
    np.testing.assert_allclose(normalized[1], [1.26665318, 1.07277770], atol=1e-8)
    assert 0.95 ** 13 == pytest.approx(0.5133, abs=1e-4) and 0.99 ** 69 == pytest.approx(0.4998, abs=1e-4)


def test_identical_returns_normalize_to_zero_instead_of_nan():
    normalized = reinforce.discount_and_normalize_rewards([[1.0], [1.0]], 0.9)
    assert [list(r) for r in normalized] == [[0.0], [0.0]]


def test_config_validation_names_the_bad_field():
    reinforce.Config().validate()
    for field, value, message in [("lr", 0.0, "agent.lr must be a positive finite number"),
                                  ("lr", float("inf"), "agent.lr must be a positive finite number"),
                                  ("episodes_per_batch", 0, "agent.episodes_per_batch must be >= 1"),
                                  ("hidden", [8, 0], "agent.hidden must list positive layer widths")]:
        with pytest.raises(ValueError, match=message):
            reinforce.Config(**{field: value}).validate()
    for field, value, allowed in [("activation", "swish", "tanh, relu, elu, leaky_relu, gelu"),
                                  ("init", "xavier", "torch, keras, orthogonal")]:
        with pytest.raises(ValidationError, match=rf"Invalid value '{value}', expected one of \[{allowed}\]"):
            OmegaConf.merge(OmegaConf.structured(reinforce.Config), {field: value})


def test_the_policy_gradient_is_minus_the_mean_of_return_weighted_score():
    """The loss the agent minimises has the REINFORCE gradient: −mean_t A_t ∇ log π(a_t|s_t)."""
    core.manual_seed(0)
    policy = mlp(4, [], 2)  # a linear softmax policy: ∇_W log π(a|s) = (onehot(a) − π(s)) sᵀ
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    actions = np.array([0, 1, 1, 0, 1])
    advantages = np.array([1.0, -0.5, 2.0, 0.0, 0.3], dtype=np.float32)
    dist = core.distributions.Categorical(logits=policy(core.tensor(obs)))
    loss = -(dist.log_prob(core.tensor(actions)) * core.tensor(advantages)).mean()
    loss.backward()
    probs = dist.probs.detach().numpy()
    score = (np.eye(2)[actions] - probs)[:, :, None] * obs[:, None, :]
    expected = -(advantages[:, None, None] * score).mean(0)
    np.testing.assert_allclose(policy[0].weight.grad.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_episodes_run_in_lockstep_to_their_own_ends():
    envs = [reinforce.make_env(OmegaConf.create({"id": "CartPole-v1"})) for _ in range(3)]
    policy = mlp(4, [8], 2)
    encode = reinforce.observation_encoder(envs[0].observation_space)[1]
    trajectories = reinforce.play_episodes(envs, [1, 2, 3], policy, encode, core.Generator(0), "cpu")
    for env, seed, trajectory in zip(envs, [1, 2, 3], trajectories):
        assert len(trajectory["obs"]) == len(trajectory["actions"]) == len(trajectory["rewards"]) >= 8
        assert trajectory["return"] == sum(trajectory["rewards"])
        np.testing.assert_array_equal(trajectory["obs"][0], env.reset(seed=seed)[0])  # seeded resets
    again = reinforce.play_episodes(envs, [1, 2, 3], policy, encode, core.Generator(0), "cpu")
    assert [t["actions"] for t in again] == [t["actions"] for t in trajectories]


def test_same_seed_same_run_and_different_seed_different_run(tmp_path):
    first, _ = train(tmp_path / "a", make_cfg(total_timesteps=1500))
    second, _ = train(tmp_path / "b", make_cfg(total_timesteps=1500))
    other, _ = train(tmp_path / "c", make_cfg(total_timesteps=1500, seed=1))
    for metrics in (first, second, other):
        metrics.pop("time/wall_s")
    assert first == second and first != other


@pytest.mark.parametrize("baseline,normalize", [("value", True), ("mean", False), ("none", False)])
def test_baselines_train_and_resume_bitwise(tmp_path, baseline, normalize):
    options = dict(total_timesteps=1500, baseline=baseline, normalize_returns=normalize, ent_coef=0.01,
                   max_grad_norm=0.5, init="orthogonal")
    whole, run = train(tmp_path / "whole", make_cfg(checkpoint_every=500, **options))  # env steps
    final = run.checkpoints.latest()
    assert ("value" in final) == (baseline == "value")
    # continue from an intermediate checkpoint, as after a crash, in a copy of the run
    first = run.checkpoints.periodic()[0]
    assert first.name != f"ckpt_{final['step']}.ckpt"
    half = tmp_path / "half"
    (half / "checkpoints").mkdir(parents=True)
    (half / "checkpoints" / "last.ckpt").write_bytes(first.read_bytes())
    resumed, run = train(half, make_cfg(checkpoint_every=500, **options), resume=half)
    for metrics in (whole, resumed):
        metrics.pop("time/wall_s")
    assert resumed == whole
    again = run.checkpoints.latest()
    for name in ("policy", "value") if baseline == "value" else ("policy",):
        for key, tensor in final[name].items():
            assert np.array_equal(again[name][key].numpy(), tensor.numpy()), key


def test_discrete_observations_are_one_hot_and_the_maze_is_learned(tmp_path):
    metrics, _ = train(tmp_path, make_cfg("lab/Maze3x4-v0", total_timesteps=6000, lr=0.05, gamma=0.9,
                                          eval_episodes=1, max_episode_steps=30))
    assert metrics["eval/return_mean"] == 5.0  # the shortest path: 5 moves (−1 each) into the +10 terminal


@pytest.mark.parametrize("env_id,message", [
    ("lab/Bandit-v0", "has no time limit; set env.max_episode_steps"),
    ("lab/ThreeStateMDP-v0", "forbids some in some states"),
    ("Pendulum-v1", "needs a discrete action space"),
])
def test_unsuitable_envs_are_refused_at_start(tmp_path, env_id, message):
    cfg = make_cfg(env_id, max_episode_steps=10 if "MDP" in env_id else None)
    with pytest.raises(ConfigError, match=message):
        train(tmp_path, cfg)


def test_make_policy_is_the_trained_policy(tmp_path):
    _, run = train(tmp_path, make_cfg(total_timesteps=500))
    state = run.checkpoints.latest()
    env = reinforce.make_env(OmegaConf.create({"id": "CartPole-v1"}))
    act = reinforce.make_policy(make_cfg(), state, env)
    policy = reinforce.build_policy(make_cfg().agent, env)
    policy.load_state_dict(state["policy"])
    obs = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    with core.no_grad():
        greedy = policy(core.tensor(obs)).numpy().argmax(1)
    assert [act(o) for o in obs] == greedy.tolist()


def test_learns_cartpole_to_an_evaluation_return_above_400(tmp_path):
    metrics, _ = train(tmp_path, make_cfg(total_timesteps=60_000, eval_episodes=10))
    assert metrics["eval/return_mean"] > 400, metrics
