"""DQN pieces (agents/dqn.py, agents/networks.py, agents/schedules.py): the books' loss and target fixtures
(FX-RL-1, FX-RL-8), ε and β schedules (FX-RL-7), Q-networks, target updates, configs and bad input."""
import numpy as np
import pytest
from omegaconf import OmegaConf, ValidationError

import core
from agents import EVAL_SEED_OFFSET, evaluate_policy
from agents.buffers import Batch, ReplayBuffer
from agents.dqn import (Config, TargetValues, bootstrap_targets, make_env, make_policy, td_loss, td_targets, train,
                        update_target)
from agents.actor_critic import evaluate
from agents.networks import ACTIVATIONS, QNetwork, dueling_q, max_over_actions, select_actions
from agents.schedules import epsilon_schedule, exponential_schedule, linear_schedule
from core import nn
from core.runtime.run import ConfigError, Run
from envs.factory import make_vector_env


# ----- FX-RL-1: the MTF ch. 8 (TF-Agents) DQN loss example -----
def dense2():
    """Dense(2) with kernel [[2, 1], [1, 1]] (rows = inputs, Keras' layout) and bias [1, 1]."""
    layer = nn.Linear(2, 2)
    layer.weight.data[...] = np.array([[2.0, 1.0], [1.0, 1.0]], np.float32).T  # ours is (out, in)
    layer.bias.data[...] = 1.0
    return layer


FX_BATCH = Batch(obs=np.array([[1, 2], [3, 4]], np.float32), actions=np.array([0, 1]),
                 rewards=np.array([10, 20], np.float32), next_obs=np.array([[-5, 6], [-7, 8]], np.float32),
                 discounts=np.array([0.9, 0.9], np.float32), indices=np.array([0, 1]),
                 weights=np.ones(2, np.float32))


@pytest.mark.parametrize("double_q", [False, True])
def test_fx_rl_1_dqn_and_double_dqn_huber_loss_is_9_8(double_q):
    q_net, target_net = dense2(), dense2()
    targets = bootstrap_targets(q_net, target_net, FX_BATCH, double_q=double_q)
    np.testing.assert_allclose(targets, [11.8, 21.8], rtol=1e-6)  # max and Double-DQN argmax both pick action 1
    loss, td_errors, q_taken = td_loss(q_net, FX_BATCH.obs, FX_BATCH.actions, targets)
    assert loss.item() == pytest.approx(9.8, rel=1e-6)
    np.testing.assert_allclose(q_taken, [5.0, 8.0])
    np.testing.assert_allclose(td_errors, [-6.8, -13.8], rtol=1e-6)
    loss.backward()  # both errors lie beyond δ = 1: each row pushes its Q-value up with slope 1/2
    np.testing.assert_allclose(q_net.bias.grad.numpy(), [-0.5, -0.5])
    np.testing.assert_allclose(q_net.weight.grad.numpy(), [[-0.5, -1.0], [-1.5, -2.0]])
    assert target_net.weight.grad is None


def test_fx_rl_1_variants_squared_error_and_importance_weights():
    q_net = dense2()
    targets = bootstrap_targets(q_net, q_net, FX_BATCH)
    mse, _, _ = td_loss(q_net, FX_BATCH.obs, FX_BATCH.actions, targets, loss="mse")
    assert mse.item() == pytest.approx((6.8 ** 2 + 13.8 ** 2) / 2, rel=1e-6)
    weighted, _, _ = td_loss(q_net, FX_BATCH.obs, FX_BATCH.actions, targets, weights=np.array([1.0, 1.0], np.float32))
    assert weighted.item() == pytest.approx(9.8, rel=1e-6)
    weighted, _, _ = td_loss(q_net, FX_BATCH.obs, FX_BATCH.actions, targets, weights=np.array([2.0, 0.0], np.float32))
    assert weighted.item() == pytest.approx(6.3, rel=1e-6)
    wide, _, _ = td_loss(q_net, FX_BATCH.obs, FX_BATCH.actions, targets, huber_delta=10.0)
    assert wide.item() == pytest.approx((0.5 * 6.8 ** 2 + 10 * (13.8 - 5)) / 2, rel=1e-6)
    terminal = FX_BATCH._replace(discounts=np.array([0.0, 0.9], np.float32))
    np.testing.assert_allclose(bootstrap_targets(q_net, q_net, terminal), [10.0, 21.8], rtol=1e-6)


def test_keras_style_loss_regresses_every_action_on_the_target_vector():
    """MTF ch. 8: Q(s, ·) = [5, 4] and [11, 8] are fitted to the target net's Q(s, ·) (here [0, 3] and
    [7, 0]) with the taken action's entry replaced by y = 11.8, 21.8; the MSE averages over actions."""
    q_net, targets = dense2(), np.array([11.8, 21.8], np.float32)
    q_others = np.array([[0.0, 3.0], [7.0, 0.0]], np.float32)
    mse, td_errors, _ = td_loss(q_net, FX_BATCH.obs, FX_BATCH.actions, targets, loss="mse", q_others=q_others)
    assert mse.item() == pytest.approx((6.8 ** 2 + 1 + 4 ** 2 + 13.8 ** 2) / 4, rel=1e-6)
    np.testing.assert_allclose(td_errors, [-6.8, -13.8], rtol=1e-6)  # the taken actions' errors (priorities)
    mse.backward()  # d/dQ = 2·error / 4 per entry, summed over rows for the bias
    np.testing.assert_allclose(q_net.bias.grad.numpy(), [-3.4 + 2.0, 0.5 - 6.9], rtol=1e-6)
    weighted, _, _ = td_loss(q_net, FX_BATCH.obs, FX_BATCH.actions, targets, np.array([2.0, 0.0], np.float32), "mse",
                             q_others=q_others)
    assert weighted.item() == pytest.approx(2 * (6.8 ** 2 + 1) / 2 / 2, rel=1e-6)
    huber, _, _ = td_loss(q_net, FX_BATCH.obs, FX_BATCH.actions, targets, q_others=q_others)
    assert huber.item() == pytest.approx((6.3 + 0.5 + 3.5 + 13.3) / 4, rel=1e-6)


# ----- FX-RL-8: DQN vs Double DQN target, dueling head -----
def test_fx_rl_8_dqn_and_double_dqn_targets():
    rewards, discounts = np.array([1.0]), np.array([0.9])
    q_online, q_target = np.array([[1.0, 3.0]]), np.array([[5.0, 2.0]])
    assert td_targets(rewards, discounts, q_target)[0] == pytest.approx(5.5)
    assert td_targets(rewards, discounts, q_target, q_online)[0] == pytest.approx(2.8)


def test_fx_rl_8_dueling_head():
    value, advantage = core.tensor([[1.0]]), core.tensor([[2.0, 0.0]])
    np.testing.assert_allclose(dueling_q(value, advantage, "max").numpy(), [[1.0, -1.0]])
    np.testing.assert_allclose(dueling_q(value, advantage, "mean").numpy(), [[2.0, 0.0]])


# ----- FX-RL-7: schedules -----
def test_fx_rl_7_multiplicative_epsilon_per_action_choice():
    epsilon = exponential_schedule(1.0, 0.01, 0.995)  # ε after k choices: max(0.01, 0.995^k)
    assert epsilon(0) == 1.0
    assert epsilon(918) == pytest.approx(0.010037, abs=1e-6) and epsilon(918) > 0.01
    assert epsilon(919) == 0.01 and epsilon(5000) == 0.01
    np.testing.assert_allclose(epsilon(np.array([0, 918, 919])), [1.0, 0.0100366, 0.01], rtol=1e-5)
    rising = exponential_schedule(0.1, 1.0, 2.0)
    assert rising(1) == 0.2 and rising(10) == 1.0


def test_fx_rl_7_linear_schedules_per_episode_and_per_step():
    homl = linear_schedule(1.0, 0.01, 495)  # max(1 − ep/500, 0.01)
    assert [homl(0), homl(250), homl(495), homl(2000)] == pytest.approx([1.0, 0.5, 0.01, 0.01])
    bdl = linear_schedule(0.08, 0.01, 1400)  # max(0.01, 0.08 − 0.01·ep/200)
    assert [bdl(0), bdl(200), bdl(1400), bdl(3000)] == pytest.approx([0.08, 0.07, 0.01, 0.01])
    breakout = linear_schedule(1.0, 0.01, 62_500)
    assert breakout(31_250) == pytest.approx(0.505) and breakout(62_500) == 0.01 and breakout(10**7) == 0.01
    beta = linear_schedule(0.4, 1.0, 50_000)  # PER β
    assert beta(0) == 0.4 and beta(50_000) == 1.0 and beta(25_000) == pytest.approx(0.7)
    assert linear_schedule(1.0, 0.05, 0)(0) == 0.05
    np.testing.assert_allclose(homl(np.array([0, 250, 495, 600])), [1.0, 0.5, 0.01, 0.01])


def test_config_schedules():
    sb3 = epsilon_schedule(Config())  # SB3's: linear over 10 % of 1,000,000 steps
    assert sb3(0) == 1.0 and sb3(50_000) == pytest.approx(0.525) and sb3(100_000) == pytest.approx(0.05)
    zoo = epsilon_schedule(Config(total_timesteps=50_000, exploration_fraction=0.16, epsilon_end=0.04))  # CartPole's
    assert zoo(4_000) == pytest.approx(0.52) and zoo(8_000) == pytest.approx(0.04)
    homl = epsilon_schedule(Config(epsilon_unit="episode", epsilon_decay_duration=495, epsilon_end=0.01))
    assert homl(250) == pytest.approx(0.5)
    mtf = epsilon_schedule(Config(epsilon_schedule="exponential", epsilon_end=0.01, epsilon_decay=0.995))
    assert mtf(919) == 0.01


# ----- Q-networks -----
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("dueling", [False, True])
def test_fused_mlp_q_network_matches_its_layers(dueling, activation):
    q_net = QNetwork((4,), 3, Config(hidden=[16, 8], dueling=dueling, activation=activation),
                     generator=core.Generator(0))
    assert q_net.fused
    x = core.tensor(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    fused = q_net(x)
    hidden = q_net.features(x)  # the same parameters, one node per layer
    if dueling:
        hidden = ACTIVATIONS[activation]()(hidden)
        layered = dueling_q(q_net.value(hidden), q_net.advantage(hidden))
    else:
        layered = hidden
    np.testing.assert_allclose(fused.detach().numpy(), layered.detach().numpy(), rtol=1e-5, atol=1e-6)
    grads = []
    for out in (fused, layered):
        q_net.zero_grad()
        (out * out).sum().backward()
        grads.append([p.grad.numpy().copy() for p in q_net.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_q_network_variants_and_shapes():
    elu = QNetwork((4,), 2, Config(hidden=[8, 8], activation="elu", dueling=True, dueling_aggregation="max"))
    assert not elu.fused and elu(core.zeros(3, 4)).shape == (3, 2)
    cnn = QNetwork((4, 84, 84), 6, Config(network="nature_cnn", dueling=True), generator=core.Generator(0))
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 4, 84, 84)).astype(np.uint8)
    assert cnn.greedy(frames).shape == (2,)
    assert sum(p.size for p in cnn.features.parameters()) == 8 * 8 * 4 * 32 + 32 + 4 * 4 * 32 * 64 + 64 + \
        3 * 3 * 64 * 64 + 64 + 3136 * 512 + 512  # the Nature CNN: 84 -> 20 -> 9 -> 7, flatten 3136
    with pytest.raises(ConfigError, match="nature_cnn needs image observations"):
        QNetwork((4,), 2, Config(network="nature_cnn"))
    with pytest.raises(ConfigError, match="at least 36x36"):
        QNetwork((4, 20, 20), 2, Config(network="nature_cnn"))


def test_select_actions_draws_the_same_random_numbers_whatever_epsilon():
    q_net = QNetwork((4,), 2, Config(hidden=[8]), generator=core.Generator(0))
    obs = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    states = []
    for epsilon, expected in ((0.0, q_net.greedy(obs)), (1.0, None), (0.5, None)):
        rng = np.random.default_rng(3)
        actions = select_actions(q_net, obs, epsilon, rng, 2)
        states.append(rng.bit_generator.state["state"]["state"])
        if expected is not None:
            np.testing.assert_array_equal(actions, expected)
    assert len(set(states)) == 1
    half = select_actions(q_net, obs, 0.5, np.random.default_rng(3), 2)
    assert 0 < (half != q_net.greedy(obs)).sum() < 32  # some envs explore (and half of those pick the greedy one)


def test_target_updates_hard_and_polyak():
    online, target = nn.Linear(2, 2), nn.Linear(2, 2)
    before = target.weight.data.copy()
    pairs = list(zip(target.parameters(), online.parameters()))
    update_target(pairs, 0.1)
    np.testing.assert_allclose(target.weight.data, 0.9 * before + 0.1 * online.weight.data, rtol=1e-6)
    update_target(pairs, 1.0)
    np.testing.assert_array_equal(target.weight.data, online.weight.data)
    assert target.weight.data is not online.weight.data


def filled_buffer(steps, capacity=64, n_step=1, seed=0):
    """A 2-env buffer of `steps` random vector steps (episodes ending now and then, some truncated)."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(capacity, (3,), num_envs=2, n_step=n_step, gamma=0.9)
    obs = rng.standard_normal((2, 3)).astype(np.float32)
    for _ in range(steps):
        next_obs = rng.standard_normal((2, 3)).astype(np.float32)
        buffer.add(obs, rng.integers(0, 2, 2), rng.standard_normal(2).astype(np.float32), next_obs,
                   rng.random(2) < 0.1, rng.random(2) < 0.05)
        obs = next_obs
    return buffer, rng


@pytest.mark.parametrize("n_step", [1, 3])
def test_kept_target_values_give_the_targets_of_a_fresh_forward_pass(n_step):
    """TargetValues computes max_a Q_target(s') once per entry and target network: its targets are
    bootstrap_targets', after target updates and after the ring overwrote entries too."""
    args = Config(hidden=[16])
    online, target = QNetwork((3,), 2, args), QNetwork((3,), 2, args)
    buffer, rng = filled_buffer(20, n_step=n_step)
    kept = TargetValues(buffer.capacity)

    def check(batch_size=16):
        batch = buffer.sample(batch_size, rng)
        np.testing.assert_allclose(kept.targets(target, batch), bootstrap_targets(online, target, batch),
                                   rtol=1e-6, atol=1e-6)
    for _ in range(5):
        check()
    assert (kept.entry >= 0).sum() < 40  # drawn entries only, each once
    update_target(list(zip(target.parameters(), online.parameters())), 1.0)  # a changed target network
    kept.refresh()
    check()
    for _ in range(60):  # 120 entries through a 64-slot ring: held values of overwritten slots are stale
        buffer.add(rng.standard_normal((2, 3)).astype(np.float32), rng.integers(0, 2, 2), np.ones(2, np.float32),
                   rng.standard_normal((2, 3)).astype(np.float32), np.zeros(2, bool), np.zeros(2, bool))
    for _ in range(5):
        check(64)


def test_kept_target_values_round_trip_through_their_state():
    args = Config(hidden=[16])
    target = QNetwork((3,), 2, args)
    buffer, rng = filled_buffer(30)
    kept = TargetValues(buffer.capacity)
    kept.targets(target, buffer.sample(32, rng))
    kept.refresh()
    kept.targets(target, buffer.sample(8, rng))  # computed with the new version: only these are current
    restored = TargetValues(buffer.capacity)
    restored.load_state_dict(kept.state_dict())
    current = kept.computed_in == kept.version
    assert 0 < current.sum() <= 8 and restored.version == kept.version == 1
    np.testing.assert_array_equal(restored.computed_in == restored.version, current)
    np.testing.assert_array_equal(restored.entry[current], kept.entry[current])
    np.testing.assert_array_equal(restored.values[current], kept.values[current])
    batch = buffer.sample(32, rng)
    np.testing.assert_array_equal(restored.targets(target, batch), kept.targets(target, batch))
    with pytest.raises(ValueError, match="kept target values of a 64-entry replay buffer, this one holds 32"):
        TargetValues(32).load_state_dict(kept.state_dict())


# ----- configs and bad input -----
@pytest.mark.parametrize("fields, message", [
    ({"batch_size": 512, "buffer_size": 256}, r"batch_size \(512\) cannot exceed agent.buffer_size \(256\)"),
    ({"lr": 0.0}, "agent.lr must be a positive finite number"),
    ({"gamma": 1.5}, r"agent.gamma must be in \[0, 1\]"),
    ({"epsilon_unit": "episode"}, "needs agent.epsilon_decay_duration"),
    ({"target_return": 475.0, "eval_every": 0}, "needs agent.eval_every >= 1 or null"),
    ({"hidden": []}, "agent.hidden must list one or more positive layer widths"),
    ({"gradient_steps": 0}, r"agent.gradient_steps must be >= 1, or -1 \(as many updates as env steps collected\), "
                            "got 0"),
    ({"gradient_steps": -2}, r"agent.gradient_steps must be >= 1, or -1 .*got -2"),
])
def test_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        Config(**fields).validate()
    Config().validate()


@pytest.mark.parametrize("fields, message", [
    ({"network": "resnet"}, r"Invalid value 'resnet', expected one of \[mlp, nature_cnn\]"),
    ({"target_update_unit": "hour"}, r"Invalid value 'hour', expected one of \[step, update, episode\]"),
    ({"epsilon_schedule": "cosine"}, r"Invalid value 'cosine', expected one of \[linear, exponential\]"),
])
def test_choices_are_checked_when_the_config_is_composed(fields, message):
    with pytest.raises(ValidationError, match=message):
        OmegaConf.merge(OmegaConf.structured(Config), fields)


def run_config(tmp_path, env_id="CartPole-v1", **agent):
    cfg = OmegaConf.create({"seed": 0, "device": "cpu", "checkpoint_every": 0, "eval_episodes": 3,
                            "agent": OmegaConf.merge(OmegaConf.structured(Config), agent),
                            "env": {"id": env_id, "num_envs": 1, "vectorization": "sync", "max_episode_steps": None}})
    return cfg, Run(tmp_path / "run", config=OmegaConf.to_container(cfg, enum_to_str=True), quiet=True,
                    tensorboard=False)


def test_continuous_actions_fail_at_start_up_with_a_clear_message(tmp_path):
    cfg, run = run_config(tmp_path, env_id="Pendulum-v1")
    with run, pytest.raises(ConfigError, match="DQN needs a discrete action space; Pendulum-v1 has Box"):
        train(cfg, run)


def test_batched_evaluation_replays_what_scripts_evaluate_plays():
    """The final evaluation (vector env, one batched forward per step) and evaluate.py's
    (make_env + make_policy, one episode after the other) play the same episodes."""
    cfg = OmegaConf.create({"agent": OmegaConf.structured(Config(hidden=[16])), "seed": 0,
                            "env": {"id": "CartPole-v1", "num_envs": 1, "vectorization": "sync",
                                    "max_episode_steps": None}})
    q_net = QNetwork((4,), 2, Config(hidden=[16]), generator=core.Generator(5))
    envs = make_vector_env("CartPole-v1", 4, seed=EVAL_SEED_OFFSET, autoreset_mode="same_step")
    returns, lengths = evaluate(q_net, envs, seed=EVAL_SEED_OFFSET)
    env = make_env(cfg.env)
    act = make_policy(cfg, {"q_net": q_net.state_dict()}, env)
    played = evaluate_policy(env, act, 4, EVAL_SEED_OFFSET)
    assert returns.tolist() == played["returns"] and lengths.tolist() == played["lengths"]
    obs = env.reset(seed=0)[0]
    greedy_action = act(obs)
    explorer = make_policy(OmegaConf.merge(cfg, {"agent": {"epsilon_end": 1.0}}), {"q_net": q_net.state_dict()}, env,
                           greedy=False, generator=core.Generator(0))
    assert {explorer(obs) for _ in range(50)} == {0, 1}
    never = make_policy(OmegaConf.merge(cfg, {"agent": {"epsilon_end": 0.0}}), {"q_net": q_net.state_dict()}, env,
                        greedy=False, generator=core.Generator(0))
    assert {never(obs) for _ in range(20)} == {greedy_action}


@pytest.mark.parametrize("num_envs", [1, 4])
def test_gradient_steps_minus_one_makes_one_update_per_env_step_collected(num_envs, tmp_path):
    # rounds every 8 env steps (whatever the env count); learning once past 100 env steps: 104, 112, ..., 400
    fields = dict(total_timesteps=400, num_envs=num_envs, learning_starts=100, train_freq=8, buffer_size=400,
                  batch_size=16, hidden=[8])
    cfg, run = run_config(tmp_path, gradient_steps=-1, **fields)
    with run:
        assert train(cfg, run)["train/updates"] == 38 * 8
    cfg, run = run_config(tmp_path / "same", gradient_steps=8, **fields)  # the same ratio, spelled out
    with run:
        assert train(cfg, run)["train/updates"] == 38 * 8


def test_gradient_steps_minus_one_counts_the_env_steps_of_episode_rounds(tmp_path):
    cfg, run = run_config(tmp_path, gradient_steps=-1, train_freq=2, train_freq_unit="episode", learning_starts=0,
                          total_timesteps=300, num_envs=2, buffer_size=300, batch_size=16, hidden=[8])
    with run:
        metrics = train(cfg, run)
    counters = core.load(tmp_path / "run" / "checkpoints" / "last.ckpt")["counters"]
    # every env step up to the end of the last round of two episodes was learned from, once
    assert 0 < metrics["train/updates"] == counters["round_start"] <= 300


@pytest.mark.parametrize("shape", [(5, 1), (7, 2), (1024, 3), (64, 18)])
def test_max_over_actions_is_numpys_row_max(shape):
    rng = np.random.default_rng(0)
    q = rng.standard_normal(shape).astype(np.float32)
    q[0, -1], q[1 % shape[0], 0] = np.nan, np.inf  # NaN propagates as in max(axis=1)
    np.testing.assert_array_equal(max_over_actions(q), q.max(axis=1))
