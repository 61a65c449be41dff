"""The actor-critic building blocks: GAE and n-step returns (hand-computed, with a truncated
episode), bootstrapping at truncation inside real rollouts, the fused MLP in the model, policies, spaces,
evaluation, the lr schedule."""
import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

import core
from agents import EVAL_SEED_OFFSET, derive_seed, evaluate_policy
from agents.actor_critic import (ActorCritic, distribution_for, evaluate, lr_schedule, make_envs, make_policy,
                                 parameter_groups)
from agents.rollout import (RolloutBuffer, collect_rollout, compute_gae, explained_variance, n_step_returns,
                            normalize)
from core.runtime.errors import ConfigError
from core.tensor import Tensor
from envs import VectorStepper, make_vector_env

# Two envs, four steps, gamma 0.9, lambda 0.5.
# env 0: the episode terminates at t = 1 (next value ignored: 9.0), a new one starts at t = 2.
# env 1: the episode is truncated at t = 2; its true final observation is worth 5.0, while the
#        reset observation stored at t = 3 is worth 4.0: only 5.0 may be used.
REWARDS = np.array([[1, 1], [1, 2], [1, 0], [1, 1]], np.float32)
VALUES = np.array([[0.5, 1.0], [0.4, 2.0], [0.3, 3.0], [0.2, 4.0]], np.float32)
NEXT_VALUES = np.array([[0.4, 2.0], [9.0, 3.0], [0.2, 5.0], [0.1, 6.0]], np.float32)
TERMINATED = np.array([[0, 0], [1, 0], [0, 0], [0, 0]], bool)
TRUNCATED = np.array([[0, 0], [0, 0], [0, 1], [0, 0]], bool)


def test_gae_by_hand_with_termination_and_truncation():
    advantages, returns = compute_gae(REWARDS, VALUES, NEXT_VALUES, TERMINATED, TRUNCATED, gamma=0.9, gae_lambda=0.5)
    # env 0: deltas 1 + .9*.4 - .5 = .86, 1 - .4 = .6 (terminal), 1 + .9*.2 - .3 = .88, 1 + .9*.1 - .2 = .89
    #        A3 = .89, A2 = .88 + .45*.89 = 1.2805, A1 = .6 (chain cut), A0 = .86 + .45*.6 = 1.13
    # env 1: deltas 1 + 1.8 - 1 = 1.8, 2 + 2.7 - 2 = 2.7, 0 + .9*5 - 3 = 1.5 (bootstrapped), 1 + 5.4 - 4 = 2.4
    #        A3 = 2.4, A2 = 1.5 (chain cut), A1 = 2.7 + .45*1.5 = 3.375, A0 = 1.8 + .45*3.375 = 3.31875
    expected = np.array([[1.13, 3.31875], [0.6, 3.375], [1.2805, 1.5], [0.89, 2.4]])
    np.testing.assert_allclose(advantages, expected, rtol=1e-6)
    np.testing.assert_allclose(returns, expected + VALUES, rtol=1e-6)
    assert advantages.dtype == np.float32


def test_n_step_returns_by_hand_and_equal_to_gae_with_lambda_one():
    returns = n_step_returns(REWARDS, NEXT_VALUES, TERMINATED, TRUNCATED, gamma=0.9)
    # env 0: R3 = 1 + .9*.1 = 1.09, R2 = 1 + .9*1.09 = 1.981, R1 = 1 (terminal), R0 = 1 + .9 = 1.9
    # env 1: R3 = 1 + .9*6 = 6.4, R2 = .9*5 = 4.5 (truncated: bootstraps), R1 = 2 + .9*4.5 = 6.05, R0 = 6.445
    expected = np.array([[1.9, 6.445], [1.0, 6.05], [1.981, 4.5], [1.09, 6.4]])
    np.testing.assert_allclose(returns, expected, rtol=1e-6)
    _, gae_returns = compute_gae(REWARDS, VALUES, NEXT_VALUES, TERMINATED, TRUNCATED, gamma=0.9, gae_lambda=1.0)
    np.testing.assert_allclose(gae_returns, expected, rtol=1e-6)


def test_gae_lambda_zero_is_one_step_td():
    advantages, _ = compute_gae(REWARDS, VALUES, NEXT_VALUES, TERMINATED, TRUNCATED, gamma=0.9, gae_lambda=0.0)
    deltas = REWARDS + 0.9 * NEXT_VALUES * ~TERMINATED - VALUES
    np.testing.assert_allclose(advantages, deltas, rtol=1e-6)


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_rollout_bootstraps_truncation_from_the_true_final_observation(mode):
    # 3-step episodes: every env is truncated at steps 2 and 5 (CartPole cannot fall in 3 steps)
    envs = make_vector_env("CartPole-v1", 3, seed=0, vectorization="native", autoreset_mode=mode, max_episode_steps=3)
    model = ActorCritic(4, 2, generator=core.Generator(0))
    stepper = VectorStepper(envs)
    stepper.reset(seed=0)
    transitions = []
    step = stepper.step
    stepper.step = lambda actions: transitions.append(step(actions)) or transitions[-1]
    buffer = RolloutBuffer(7, envs)
    episodes = collect_rollout(stepper, model, buffer, core.Generator(1))

    assert len(episodes) == 6 and buffer.truncated[2].all() and not buffer.terminated.any()
    for t, transition in enumerate(transitions):
        with core.no_grad():
            expected = model.value(Tensor._make(transition.next_obs)).data
        valid = transition.valid
        np.testing.assert_array_equal(buffer.next_values[t][valid], expected[valid])
        np.testing.assert_array_equal(buffer.valid[t], valid)
    # the truncated step's bootstrap observation is the episode's last one, not the next stored (reset) one
    final = transitions[2].next_obs
    if mode == "same_step":
        assert not np.allclose(final, buffer.obs[3])
        assert buffer.valid.all()
    else:
        np.testing.assert_array_equal(final, buffer.obs[3])  # the reset step, stored but never used
        assert not buffer.valid[3].any() and buffer.valid[[0, 1, 2, 4, 5]].all()
    # the last step bootstraps from the observation the next rollout starts in
    with core.no_grad():
        np.testing.assert_array_equal(buffer.next_values[-1], model.value(Tensor._make(stepper.obs)).data)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("scale", [1.0, 0.0, 1e3], ids=["normal", "zero", "saturating"])
def test_fused_mlp_matches_layer_by_layer(shared, activation, scale):
    # scale 0: with the zero initial biases every pre-activation is exactly 0, relu's kink
    models = [ActorCritic(4, 3, hidden=[16, 8], activation=activation, shared=shared, generator=core.Generator(5),
                          fused=fused).double() for fused in (True, False)]
    x = core.tensor(np.random.default_rng(0).standard_normal((6, 4)) * scale, requires_grad=True)
    results = []
    for model in models:
        x.grad = None
        head, value = model(x)
        ((head * head).sum() + (value ** 3).sum()).backward()
        results.append([head.data, value.data, x.grad.data] + [p.grad.data for p in model.parameters()])
    for fused, unfused in zip(*results):
        np.testing.assert_array_equal(fused, unfused)


def test_fused_mlp_gradcheck():
    model = ActorCritic(3, 2, hidden=[5, 4], generator=core.Generator(2)).double()
    params = list(model.actor.parameters())
    x = core.tensor(np.random.default_rng(1).standard_normal((4, 3)), requires_grad=True)
    assert core.gradcheck(lambda x, *ps: model.policy(x), [x, *params])


def test_categorical_log_prob_and_entropy_match_the_distribution():
    model = ActorCritic(4, 3, generator=core.Generator(3), init="torch")
    obs = Tensor._make(np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32))
    actions = np.array([0, 2, 1, 1, 0])
    logprobs, entropy, values = model.evaluate_actions(obs, actions)
    dist = model.distribution(model(obs)[0])
    np.testing.assert_allclose(logprobs.data, dist.log_prob(actions).data, rtol=1e-5)
    np.testing.assert_allclose(entropy.data, dist.entropy().data, rtol=1e-5)
    _, constant_entropy, _ = model.evaluate_actions(obs, actions, entropy_grad=False)
    np.testing.assert_allclose(constant_entropy.data, entropy.data, rtol=1e-6)
    assert not constant_entropy.requires_grad


def test_act_samples_with_the_generator_and_reports_log_probs():
    model = ActorCritic(4, 2, generator=core.Generator(0), init="torch")
    obs = np.random.default_rng(0).standard_normal((2000, 4)).astype(np.float32)
    actions, logprobs, values = model.act(obs, core.Generator(7))
    again, _, _ = model.act(obs, core.Generator(7))
    np.testing.assert_array_equal(actions, again)
    with core.no_grad():
        log_probs = core.log_softmax(model.policy(Tensor._make(obs)), -1).data
        np.testing.assert_allclose(values, model.value(Tensor._make(obs)).data)
    np.testing.assert_allclose(logprobs, log_probs[np.arange(2000), actions], rtol=1e-6)
    # the sampled frequency of action 1 follows its probability
    assert abs(actions.mean() - np.exp(log_probs[:, 1]).mean()) < 0.04


def test_gaussian_policy_log_prob_entropy_and_clipping():
    model = ActorCritic(3, 2, distribution="gaussian", log_std_init=-0.5, generator=core.Generator(0))
    obs = Tensor._make(np.zeros((4, 3), np.float32))
    actions = np.full((4, 2), 0.3, np.float32)
    logprobs, entropy, _ = model.evaluate_actions(obs, actions)
    mean = model.policy(obs).data
    std = np.exp(-0.5)
    expected = (-0.5 * ((actions - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(logprobs.data, expected, rtol=1e-5)
    np.testing.assert_allclose(entropy.data, 2 * (0.5 + 0.5 * np.log(2 * np.pi) - 0.5), rtol=1e-5)
    logprobs.sum().backward()
    assert model.log_std.grad is not None
    env = gym.make("Pendulum-v1")
    act = make_policy(OmegaConf.create({"agent": _agent_args(distribution="gaussian")}),
                      {"model": ActorCritic(3, 1, "gaussian", log_std_init=3.0).state_dict()}, env, greedy=False,
                      generator=core.Generator(0))
    actions = np.array([act(np.zeros(3, np.float32)) for _ in range(50)])
    assert actions.shape == (50, 1) and actions.min() >= -2.0 and actions.max() <= 2.0 and (abs(actions) == 2).any()


def _agent_args(**changes):
    return {"hidden": [64, 64], "activation": "tanh", "init": "orthogonal", "shared": False, "distribution": "auto",
            "log_std_init": 0.0, **changes}


def test_action_spaces_the_policy_cannot_represent_fail_clearly():
    assert distribution_for(gym.spaces.Discrete(3)) == "categorical"
    assert distribution_for(gym.spaces.Box(-1, 1, (2,))) == "gaussian"
    with pytest.raises(ConfigError, match=r"PPO acts in Discrete or 1-D Box action spaces; the env has MultiDiscrete"):
        distribution_for(gym.spaces.MultiDiscrete([2, 3]), agent="PPO")
    with pytest.raises(ConfigError, match=r"distribution='categorical' needs a Discrete action space, the env has "
                                          r"Box.*use distribution=auto or gaussian"):
        distribution_for(gym.spaces.Box(-2, 2, (1,)), "categorical")
    with pytest.raises(ConfigError, match="needs a 1-D Box"):
        distribution_for(gym.spaces.Discrete(2), "gaussian")


def test_vectorized_evaluation_replays_the_single_env_episodes():
    # the eval envs are seeded seed + EVAL_SEED_OFFSET + k, as scripts/evaluate.py's episodes
    model = ActorCritic(4, 2, generator=core.Generator(4), init="torch")
    seed = EVAL_SEED_OFFSET + 3
    returns, lengths = evaluate(model, make_vector_env("CartPole-v1", 4, seed=seed, autoreset_mode="same_step"),
                                seed=seed)
    cfg = OmegaConf.create({"agent": _agent_args(init="torch")})
    single = evaluate_policy(gym.make("CartPole-v1"), make_policy(cfg, {"model": model.state_dict()},
                                                                   gym.make("CartPole-v1")), 4, seed)
    np.testing.assert_array_equal(returns, single["returns"])
    np.testing.assert_array_equal(lengths, single["lengths"])
    # native envs (NEXT_STEP: reset steps are not counted) agree with their own episodes' lengths
    returns, lengths = evaluate(model, make_vector_env("CartPole-v1", 5, seed=0, vectorization="native"), seed=0)
    np.testing.assert_array_equal(returns, lengths)
    assert (lengths > 0).all()


def test_normalize_explained_variance_and_seed_streams():
    x = np.array([1.0, 2.0, 3.0, 6.0], np.float32)
    np.testing.assert_allclose(normalize(x), (x - 3) / (np.std(x, ddof=1) + 1e-8), rtol=1e-6)
    np.testing.assert_array_equal(normalize(np.array([5.0])), [0.0])
    y = np.array([1.0, 2.0, 3.0])
    assert explained_variance(y, y) == 1.0
    assert explained_variance(np.full(3, 2.0), y) == 0.0
    assert np.isnan(explained_variance(y, np.ones(3)))
    assert derive_seed(0, "actions") == derive_seed(0, "actions")
    assert len({derive_seed(0, "actions"), derive_seed(1, "actions"), derive_seed(0, "init"),
                derive_seed(0, "worker", 1), derive_seed(0, "worker", 2)}) == 5


def test_a_critic_learning_rate_puts_the_critic_in_a_group_of_its_own():
    model = ActorCritic(4, 2, hidden=[8])
    groups = parameter_groups(model, 1e-3, 3e-3)
    assert [group["lr"] for group in groups] == [1e-3, 3e-3]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.critic.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.actor.parameters()}
    assert len(parameter_groups(model, 1e-3)) == 1
    optimizer = core.optim.Adam(groups, lr=1e-3)
    schedule = lr_schedule(optimizer, anneal=True, total=4)
    schedule.step()
    schedule.step()  # halfway: annealing keeps the two rates' ratio
    assert [group["lr"] for group in optimizer.param_groups] == [5e-4, 1.5e-3]
    other = ActorCritic(4, 2, hidden=[8])
    constant = lr_schedule(core.optim.Adam(parameter_groups(other, 1e-3, 3e-3), lr=1e-3), anneal=False, total=4)
    constant.step()
    assert constant.get_last_lr() == [1e-3, 3e-3]
    with pytest.raises(ConfigError, match=r"agent.critic_lr needs separate actor and critic networks"):
        parameter_groups(ActorCritic(4, 2, hidden=[8], shared=True), 1e-3, 3e-3)


def test_an_env_config_chooses_the_native_envs_precision():
    env_cfg = OmegaConf.create({"id": "CartPole-v1", "num_envs": 4, "vectorization": "native",
                                "native_dtype": "float32", "max_episode_steps": None})
    envs = make_envs(env_cfg, 4, seed=0)
    assert envs.dtype == np.float32 and envs.reset()[0].dtype == np.float32
    assert make_envs(OmegaConf.merge(env_cfg, {"native_dtype": "float64"}), 4, seed=0).dtype == np.float64
