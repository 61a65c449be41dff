"""Every exact value of the catalogue's fixtures.md is a unit test (issue 8, item 3).

This file holds the fixtures no other test file covers; `test_every_fixture_id_is_tested` checks that
each FX id of fixtures.md appears in a test: named in a comment, name or docstring of another test
file, in the name or docstring of a test here, or in COVERED_ELSEWHERE (a test whose name joins
several ids, checked to exist).
"""
import ast
import math
import re
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

import core
import core.functional as F
from agents import dqn, reinforce, tabular
from agents.buffers import ReplayBuffer
from agents.networks import dueling_q
from agents.rollout import n_step_returns
from agents.schedules import epsilon_schedule, exponential_schedule, linear_schedule
from core import nn, optim
from core.metrics import Mean, Precision, Recall
from gans import autoencoders
from gans.wgan import critic_step
from scripts import book_checks

TESTS = Path(__file__).resolve().parent
FIXTURES_MD = TESTS.parents[1] / "shared" / "experiments" / "fixtures.md"

# the fixture ids of fixtures.md (frozen here so the coverage check runs where ../shared is absent)
FIXTURE_IDS = (
    [f"FX-AD-{i}" for i in range(1, 13)]
    + [f"FX-LS-{i}" for i in range(1, 10)]
    + [f"FX-CL-{i}" for i in range(1, 6)]
    + ["FX-CV-1", "FX-CV-1b", "FX-CV-2", "FX-CV-2b"] + [f"FX-CV-{i}" for i in range(3, 15)]
    + [f"FX-PC-{i}" for i in range(1, 17)] + [f"FX-PC-{i}" for i in range(20, 35)]
    + [f"FX-RL-{i}" for i in range(1, 10)]
    + [f"FX-OPT-{i}" for i in range(1, 4)] + [f"FX-MISC-{i}" for i in range(1, 5)]
    + [f"FX-ERR-{i}" for i in range(1, 6)])

# ids tested by a test whose name lists several ids at once ("fx_ad_1_and_2", "fx_cv_5_to_9")
COVERED_ELSEWHERE = {
    "FX-AD-2": "test_autograd.py::test_fx_ad_1_and_2_gradients_match_forward_differences",
    "FX-AD-10": "test_autograd.py::test_fx_ad_9_and_10",
    "FX-CV-1b": "test_conv.py::test_book_conv_and_transposed_conv_fx_cv_1_2",
    "FX-CV-2": "test_conv.py::test_book_conv_and_transposed_conv_fx_cv_1_2",
    "FX-CV-2b": "test_conv.py::test_book_conv_and_transposed_conv_fx_cv_1_2",
    "FX-CV-3": "test_conv.py::test_output_shapes_follow_keras_rules",
    "FX-CV-6": "test_conv.py::test_fx_cv_5_to_9_and_14_shapes",
    "FX-CV-7": "test_conv.py::test_fx_cv_5_to_9_and_14_shapes",
    "FX-CV-8": "test_conv.py::test_fx_cv_5_to_9_and_14_shapes",
    "FX-CV-9": "test_conv.py::test_fx_cv_5_to_9_and_14_shapes",
    "FX-CV-14": "test_conv.py::test_fx_cv_5_to_9_and_14_shapes",
}
_ID = re.compile(r"(?<![a-z0-9])fx[-_](ad|ls|cl|cv|pc|rl|opt|misc|err)[-_](\d+[a-z]?)(?![a-z0-9])", re.IGNORECASE)


def t64(values, requires_grad=False):
    return core.tensor(np.asarray(values, dtype=np.float64), requires_grad=requires_grad)


# ----- 1. autodiff: the book's printed finite difference (FX-ERR-1) -----
def test_fx_err_1_forward_difference_has_one_zero_more_than_printed():
    """FX-ERR-1: (f(5, 3 + 1e-6) − f(5, 3)) / 1e-6 for f = 3·w1² + 2·w1·w2 is 10.000000003174137 in float64;
    the book prints 10.00000003174137 (one zero short)."""
    def f(w1, w2):
        return 3 * w1 ** 2 + 2 * w1 * w2
    difference = (f(5, 3 + 1e-6) - f(5, 3)) / 1e-6
    assert difference == pytest.approx(10.000000003174137, rel=1e-13)
    assert abs(difference - 10.00000003174137) > 2e-8


# ----- 2. activations, losses, metrics -----
def test_fx_ls_1_softmax_float32():
    """FX-LS-1: softmax([2.0, 1.0, 0.1]) = [0.6590012, 0.242433, 0.0985659] (float32, atol 1e-6)."""
    probs = F.softmax(core.tensor([2.0, 1.0, 0.1]), axis=-1)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.numpy(), [0.6590012, 0.242433, 0.0985659], atol=1e-6)
    assert probs.numpy().sum() == pytest.approx(1.0, abs=1e-6)


def test_fx_ls_5_streaming_precision_sums_counts_over_batches():
    """FX-LS-5: precision 0.8 after batch 1, then 0.5 over both (TP 4, FP 4), not the per-batch mean 0.65;
    reset → 0 counts."""
    precision = Precision()
    precision.update([0, 1, 1, 1, 0, 1, 0, 1], [1, 1, 0, 1, 0, 1, 0, 1])
    assert precision.result() == pytest.approx(0.8)
    precision.update([0, 1, 0, 0, 1, 0, 1, 1], [1, 0, 1, 1, 0, 0, 0, 0])
    assert precision.result() == pytest.approx(0.5)
    assert (precision.numerator, precision.denominator) == (4.0, 8.0)
    precision.reset()
    assert (precision.numerator, precision.denominator, precision.result()) == (0.0, 0.0, 0.0)


def test_streaming_recall_mean_threshold_and_bad_shapes():
    recall = Recall().update([0, 1, 1, 1, 0, 1, 0, 1], [1, 1, 0, 1, 0, 1, 0, 1])
    assert recall.result() == pytest.approx(4 / 5)
    assert Precision(threshold=0.5).update(core.tensor([1.0, 0.0]), np.array([0.7, 0.9])).result() == 0.5
    mean = Mean().update([1.0, 2.0]).update(core.tensor([6.0]))
    assert mean.result() == pytest.approx(3.0)
    assert Mean().update([1.0, 3.0], weights=[3.0, 1.0]).result() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="same number of entries"):
        Precision().update([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="threshold"):
        Recall(threshold=2.0)


def test_fx_ls_7_sparsity_kl():
    """FX-LS-7: t·log(t/q) + (1 − t)·log((1 − t)/(1 − q)) at t = 0.1, q = 0.2 is 0.036690014, through the sparse
    autoencoder's KL penalty (q = the code unit's mean activation over the batch)."""
    code = t64([[0.1], [0.3]])
    assert autoencoders.sparsity_penalty("kl", code, 0.1).item() == pytest.approx(0.036690014, rel=1e-7)


def test_fx_ls_9_wasserstein_loss_terms():
    """FX-LS-9: mean(y·D(x)) with y = −1 for reals and +1 for fakes: D(real) = 2 → −2, D(fake) = −1 → −1,
    through the WGAN critic step of gans/wgan.py."""
    critic = nn.Linear(1, 1, bias=False)
    critic.weight.data[...] = 1.0  # D(x) = x
    args = SimpleNamespace(penalty="clip", gp_weight=0.0, clip_value=1.0)
    real, fake = core.tensor([[2.0], [2.0]]), core.tensor([[-1.0], [-1.0]])
    real_term, fake_term, gp = critic_step(critic, optim.SGD(critic.parameters(), lr=0.0), real, fake, args)
    assert (real_term.item(), fake_term.item(), gp) == (-2.0, -1.0, None)


# ----- 3. clipping -----
def test_fx_cl_5_clip_by_value_to_a_range():
    """FX-CL-5: clip by value to [0.4, 0.6] = min(max(x, 0.4), 0.6); the gradient passes only inside."""
    x = t64([0.1, 0.4, 0.5, 0.6, 0.9], requires_grad=True)
    y = core.clip(x, 0.4, 0.6)
    np.testing.assert_array_equal(y.detach().numpy(), [0.4, 0.4, 0.5, 0.6, 0.6])
    y.sum().backward()
    assert x.grad.numpy()[[0, 2, 4]].tolist() == [0.0, 1.0, 0.0]


# ----- 4. shapes -----
def test_fx_cv_10_padding_shape():
    """FX-CV-10: pad [[0,0],[2,2],[2,2],[0,0]] on [b,28,28,c] gives [b,32,32,c]."""
    assert core.pad(core.zeros(3, 28, 28, 5), ((0, 0), (2, 2), (2, 2), (0, 0))).shape == (3, 32, 32, 5)


def test_fx_cv_11_batched_matmul_shapes():
    """FX-CV-11: [4,3,28,32] @ [4,3,32,2] → [4,3,28,2]; [4,28,32] @ [32,16] → [4,28,16]."""
    assert (core.zeros(4, 3, 28, 32) @ core.zeros(4, 3, 32, 2)).shape == (4, 3, 28, 2)
    assert core.matmul(core.zeros(4, 28, 32), core.zeros(32, 16)).shape == (4, 28, 16)


def test_fx_cv_12_broadcasting():
    """FX-CV-12: [2,32,32,1] with [32,32] → [2,32,32,32]; [32,2] with [2,32,32,4] is an error."""
    assert (core.zeros(2, 32, 32, 1) + core.zeros(32, 32)).shape == (2, 32, 32, 32)
    with pytest.raises(ValueError, match="broadcast"):
        core.zeros(32, 2) + core.zeros(2, 32, 32, 4)


def test_fx_err_5_separable_conv_pointwise_part_is_12():
    """FX-ERR-5: a 3x3 depthwise-separable conv 3 → 4 channels (no bias) has 27 + 12 = 39 parameters; the book
    prints the pointwise part as 14."""
    depthwise, pointwise = nn.Conv2d(3, 3, 3, groups=3, bias=False), nn.Conv2d(3, 4, 1, bias=False)
    assert (depthwise.num_parameters(), pointwise.num_parameters()) == (27, 12)
    assert nn.Sequential(depthwise, pointwise).num_parameters() == 39


# ----- 5. parameter counts -----
def resnet50_layers_with_head(classes=100):
    """The weighted layers of Keras' ResNet50 without top (biased convs, BN after each) and a Dense head."""
    layers = [nn.Conv2d(3, 64, 7, 2, padding=3), nn.BatchNorm2d(64)]
    channels = 64
    for filters, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for block in range(blocks):
            if block == 0:  # the projection shortcut of each stage
                layers += [nn.Conv2d(channels, 4 * filters, 1), nn.BatchNorm2d(4 * filters)]
            layers += [nn.Conv2d(channels, filters, 1), nn.BatchNorm2d(filters),
                       nn.Conv2d(filters, filters, 3, padding=1), nn.BatchNorm2d(filters),
                       nn.Conv2d(filters, 4 * filters, 1), nn.BatchNorm2d(4 * filters)]
            channels = 4 * filters
    return nn.ModuleList([*layers, nn.Linear(2048, classes)])


def test_fx_pc_8_resnet50_without_top_plus_dense_100():
    """FX-PC-8: ResNet50 (no top) + Dense 100: total 23,792,612; trainable 23,739,492; non-trainable 53,120."""
    counts = resnet50_layers_with_head().parameter_counts()
    assert (counts["total"], counts["trainable"], counts["non_trainable"]) == (23_792_612, 23_739_492, 53_120)


def test_fx_pc_13_and_fx_pc_31_pacman_networks():
    """FX-PC-13: the Pac-Man CNN, per layer 1,216; 65,815,040; 4,617, total 65,820,873 (FX-CV-13: conv output
    206x156). FX-PC-31: the MLP with 512 hidden units, 51,614,729. The networks of scripts/book_checks.py."""
    metrics = book_checks.qcnn_params_check()
    assert metrics["check/layer_params"] == [1216, 65_815_040, 4617]
    assert metrics["check/param_count"] == 65_820_873 and metrics["check/conv_output_shape"] == [16, 206, 156]
    assert metrics["check/mlp512_param_count"] == 51_614_729 and metrics["check/mlp8_param_count"] == 806_489
    assert metrics["check/passed"] == 1.0


# ----- 6. reinforcement learning -----
def test_fx_rl_1_dqn_and_double_dqn_loss_through_agents_dqn():
    """FX-RL-1 (and FX-ERR-3, the bias as a vector): targets 11.8 and 21.8, TD errors 6.8 and 13.8, loss 9.8 for
    DQN and Double DQN, with agents.dqn's td_targets and td_loss."""
    q_net = book_checks.book_q_network()
    assert q_net.bias.shape == (2,)
    with core.no_grad():
        np.testing.assert_array_equal(q_net(core.tensor([[1.0, 2.0], [3.0, 4.0]])).numpy(), [[5, 4], [11, 8]])
        np.testing.assert_array_equal(q_net(core.tensor([[-5.0, 6.0], [-7.0, 8.0]])).numpy(), [[-3, 2], [-5, 2]])
    metrics = book_checks.dqn_loss_check()
    np.testing.assert_allclose(metrics["check/td_targets"], [11.8, 21.8], rtol=1e-6)
    np.testing.assert_allclose(np.abs(metrics["check/td_errors"]), [6.8, 13.8], rtol=1e-6)
    assert metrics["check/dqn_loss"] == pytest.approx(9.8, rel=1e-6)
    assert metrics["check/double_dqn_loss"] == pytest.approx(9.8, rel=1e-6)


def test_fx_rl_2_and_fx_err_2_discount_and_normalize():
    """FX-RL-2 with agents/reinforce.py: [10, 0, −50] → [−22, −40, −50]; discount-and-normalise of
    [[10, 0, −50], [10, 20]] (mean −13.2, population std 30.947697814). FX-ERR-2: the last value is
    1.0727776974, not the printed 1.07277777."""
    np.testing.assert_allclose(reinforce.discount_rewards([10, 0, -50], 0.8), [-22, -40, -50], rtol=1e-12)
    first, second = reinforce.discount_and_normalize_rewards([[10, 0, -50], [10, 20]], 0.8)
    flat = np.concatenate([reinforce.discount_rewards(r, 0.8) for r in ([10, 0, -50], [10, 20])])
    assert (flat.mean(), flat.std()) == (pytest.approx(-13.2), pytest.approx(30.947697814, rel=1e-10))
    np.testing.assert_allclose(first, [-0.28435071, -0.86597718, -1.18910299], atol=1e-8)
    assert second[0] == pytest.approx(1.26665318, abs=1e-8)
    assert second[1] == pytest.approx(1.0727776974, abs=1e-9)
    assert 0.95 ** 13 == pytest.approx(0.5133, abs=5e-5) and 0.99 ** 69 == pytest.approx(0.4998, abs=5e-5)


def test_fx_err_4_in_place_sweep_gives_the_printed_digits():
    """FX-ERR-4 / RL-10: the printed gridworld digits are the in-place sweep's; the synchronous sweep differs."""
    P = gym.make("lab/GridWorld4x4-v0").unwrapped.P
    in_place = tabular.policy_evaluation(P, tabular.uniform_policy(P), 1.0, theta=1e-5, in_place=True)
    synchronous = tabular.policy_evaluation(P, tabular.uniform_policy(P), 1.0, theta=1e-5, in_place=False)
    np.testing.assert_allclose(in_place[:4], [0, -13.99993529, -19.99990698, -21.99989761], atol=1e-8)
    np.testing.assert_allclose(synchronous[:4], [0, -13.99989315, -19.99984167, -21.99982282], atol=1e-8)


def test_fx_rl_7_epsilon_and_beta_schedules():
    """FX-RL-7: 0.995^918 = 0.010037 > 0.01, the floor is first hit at choice 919; max(1 − ep/500, 0.01) is 1,
    0.5, 0.01 at 0, 250, 495; max(0.01, 0.08 − 0.01·ep/200) is 0.08, 0.07, 0.01 at 0, 200, 1400; linear 1 → 0.01
    over 62,500 steps is 0.505 halfway; PER β 0.4 → 1."""
    mtf = exponential_schedule(1.0, 0.01, 0.995)
    assert mtf(918) == pytest.approx(0.010037, abs=1e-6) and mtf(918) > 0.01 and mtf(919) == 0.01
    homl = linear_schedule(1.0, 0.01, 495)  # 1 − ep/500 until it meets the floor at ep 495
    assert [homl(ep) for ep in (0, 250, 495, 600)] == pytest.approx([1.0, 0.5, 0.01, 0.01])
    assert homl(123) == pytest.approx(1 - 123 / 500)
    bdl = linear_schedule(0.08, 0.01, 1400)
    assert [bdl(ep) for ep in (0, 200, 1400, 2000)] == pytest.approx([0.08, 0.07, 0.01, 0.01])
    assert linear_schedule(1.0, 0.01, 62_500)(31_250) == pytest.approx(0.505)
    beta = linear_schedule(0.4, 1.0, 10_000)
    assert (beta(0), beta(10_000)) == (pytest.approx(0.4), pytest.approx(1.0))
    mtf_args = dqn.Config(epsilon_schedule="exponential", epsilon_start=1.0, epsilon_end=0.01, epsilon_decay=0.995)
    assert epsilon_schedule(mtf_args)(919) == 0.01


def test_fx_rl_8_agent_pieces():
    """FX-RL-8: DQN target 1 + 0.9·5 = 5.5 vs Double DQN 1 + 0.9·2 = 2.8; dueling max form V = 1, A = [2, 0] →
    Q = [1, −1]; PPO clipped term (ε 0.2): ratio 1.5, A = 1 → −1.2, ratio 0.5, A = −1 → 0.8; n-step returns of
    [1, 1, 1] (γ 0.99) bootstrapped from 10 → [12.67309, 11.791, 10.9], and at an episode end → [2.9701, 1.99, 1]."""
    r, gamma = np.array([1.0]), np.array([0.9])
    assert dqn.td_targets(r, gamma, np.array([[5.0, 2.0]])) == pytest.approx([5.5])
    assert dqn.td_targets(r, gamma, np.array([[5.0, 2.0]]), np.array([[1.0, 3.0]])) == pytest.approx([2.8])
    q = dueling_q(core.tensor([[1.0]]), core.tensor([[2.0, 0.0]]), aggregation="max")
    np.testing.assert_array_equal(q.numpy(), [[1.0, -1.0]])
    for ratio, advantage, expected in ((1.5, 1.0, -1.2), (0.5, -1.0, 0.8)):
        loss = F.ppo_clip_loss(t64([math.log(ratio)]), np.array([advantage]), 0.2)
        assert loss.item() == pytest.approx(expected)
    rewards, next_values = np.ones((3, 1)), np.array([[0.0], [0.0], [10.0]])
    no_end, end = np.zeros((3, 1), bool), np.array([[False], [False], [True]])
    bootstrapped = n_step_returns(rewards, next_values, no_end, no_end, 0.99)[:, 0]
    np.testing.assert_allclose(bootstrapped, [12.67309, 11.791, 10.9])
    np.testing.assert_allclose(n_step_returns(rewards, next_values, end, no_end, 0.99)[:, 0], [2.9701, 1.99, 1.0])


def test_fx_rl_9_replay_sampling_shapes():
    """FX-RL-9: sampling B = 4 runs of T = 2 steps gives [4,2,3], [4,2,5], [4,2,3,2]; gather-all gives
    [slots, stored steps, ...] (scripts/book_checks.py's TF-Agents-style buffer). The lab's DQN buffer samples
    transitions: [B, ...obs]."""
    metrics = book_checks.replay_buffer_demo_check(seed=0)
    assert metrics["check/sample_shapes"] == [[4, 2, 3], [4, 2, 5], [4, 2, 3, 2]]
    assert metrics["check/gather_all_shapes"] == [[32, 6, 3], [32, 6, 5], [32, 6, 3, 2]]
    buffer = book_checks.SequenceReplayBuffer({"x": ((1,), np.int64)}, slots=2, max_length=3)
    for step in range(5):  # wraps around: items 2, 3, 4 remain, oldest first
        buffer.add({"x": np.full((2, 1), step)})
    assert buffer.gather_all()["x"][:, :, 0].tolist() == [[2, 3, 4], [2, 3, 4]]
    runs = buffer.sample(8, 3, np.random.default_rng(0))["x"][..., 0]
    assert runs.shape == (8, 3) and (runs == [2, 3, 4]).all()
    with pytest.raises(ValueError, match="shape"):
        buffer.add({"x": np.zeros((3, 1))})

    replay = ReplayBuffer(100, obs_shape=(4,))
    for _ in range(10):
        obs = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
        replay.add(obs, np.array([1]), np.array([1.0]), obs, np.array([False]), np.array([False]))
    batch = replay.sample(4, np.random.default_rng(0))
    assert batch.obs.shape == (4, 4) and batch.next_obs.shape == (4, 4) and batch.actions.shape == (4,)


def test_fx_rl_9_cartpole_spec():
    """FX-RL-9: CartPole action int scalar in [0, 1]; observation (4,), bounds ±4.8 and ±0.41887903 rad, velocities
    unbounded; caps v0 200 (threshold 195) and v1 500 (475)."""
    env = gym.make("CartPole-v1")
    assert env.action_space == gym.spaces.Discrete(2)
    high = env.observation_space.high
    assert env.observation_space.shape == (4,) and high[0] == np.float32(4.8)
    assert high[2] == pytest.approx(0.41887903) and np.all(high[[1, 3]] > 3e38)
    for version, cap, threshold in (("v0", 200, 195.0), ("v1", 500, 475.0)):
        spec = gym.spec(f"CartPole-{version}")
        assert (spec.max_episode_steps, spec.reward_threshold) == (cap, threshold)


def test_fx_rl_9_atari_spaces():
    """FX-RL-9: Breakout's actions are [NOOP, FIRE, RIGHT, LEFT]; Ms. Pac-Man has Discrete(9) and Box(210, 160, 3)."""
    ale_py = pytest.importorskip("ale_py", reason="needs the atari extra (ale-py)")
    gym.register_envs(ale_py)
    breakout = gym.make("BreakoutNoFrameskip-v4")
    assert breakout.unwrapped.get_action_meanings() == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    pacman = gym.make("MsPacman-v0")
    assert pacman.action_space == gym.spaces.Discrete(9) and pacman.observation_space.shape == (210, 160, 3)
    breakout.close()
    pacman.close()


# ----- 7. optimisation and numerics -----
def test_fx_misc_1_cast_to_int16_wraps_around():
    """FX-MISC-1: casting 123456789 to int16 gives −13035."""
    assert core.cast(core.tensor(123456789), core.int16).item() == -13035


def test_fx_misc_2_save_reload_predict_identical_with_optimizer_state(tmp_path):
    """FX-MISC-2: save weights and optimizer state, reload into fresh objects: the same predictions, and the next
    optimizer step is the same too (Adam's moments came back)."""
    def build():
        core.manual_seed(7)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        return model, optim.Adam(model.parameters(), lr=0.01)

    def step(model, opt, x):
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()

    x = core.tensor(np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32))
    model, opt = build()
    step(model, opt, x)
    core.save({"model": model.state_dict(), "optim": opt.state_dict()}, tmp_path / "ckpt")
    core.manual_seed(99)
    restored = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    restored_opt = optim.Adam(restored.parameters(), lr=0.01)
    state = core.load(tmp_path / "ckpt")
    restored.load_state_dict(state["model"])
    restored_opt.load_state_dict(state["optim"])
    np.testing.assert_allclose(restored(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-6, atol=1e-6)
    step(model, opt, x)
    step(restored, restored_opt, x)
    np.testing.assert_allclose(restored(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_fx_misc_3_initializer_scales():
    """FX-MISC-3: Glorot-uniform limit sqrt(6/(fan_in + fan_out)); He-normal std sqrt(2/fan_in); LeCun-normal std
    sqrt(1/fan_in); Keras' truncated normals divide the std by 0.87962566 so the variance stays the target."""
    fan_in, fan_out = 400, 200
    weight = core.empty(fan_out, fan_in)
    limit = math.sqrt(6 / (fan_in + fan_out))
    nn.init.xavier_uniform_(weight)
    assert np.abs(weight.numpy()).max() <= limit and np.abs(weight.numpy()).max() > 0.99 * limit
    nn.init.kaiming_normal_(weight, nonlinearity="relu")
    assert weight.numpy().std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    nn.init.lecun_normal_(weight)
    assert weight.numpy().std() == pytest.approx(math.sqrt(1 / fan_in), rel=0.02)
    nn.init.variance_scaling_(weight, scale=2.0, mode="fan_in", distribution="truncated_normal")
    raw_std = math.sqrt(2 / fan_in) / 0.87962566
    assert weight.numpy().std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    assert np.abs(weight.numpy()).max() <= 2 * raw_std + 1e-7


def test_fx_misc_4_inverted_dropout():
    """FX-MISC-4: in training mode kept units are scaled by 1/(1 − p), the others are 0; identity at inference."""
    dropout = nn.Dropout(0.25)
    x = core.ones(1000, 10)
    y = dropout(x).numpy()
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert (y == 0).mean() == pytest.approx(0.25, abs=0.02)
    dropout.eval()
    np.testing.assert_array_equal(dropout(x).numpy(), x.numpy())


# ----- every fixture has a test -----
def _ids_in(text):
    return {f"FX-{kind.upper()}-{number}" for kind, number in _ID.findall(text)}


def _test_functions(path):
    return {node.name: node for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_fixture_list_matches_fixtures_md():
    """The frozen FIXTURE_IDS list is exactly the set of ids fixtures.md defines (where ../shared exists)."""
    if not FIXTURES_MD.is_file():
        pytest.skip(f"{FIXTURES_MD} not found")
    defined = set(re.findall(r"^\| (FX-[A-Z]+-\d+[a-z]?) \|", FIXTURES_MD.read_text(), re.MULTILINE))
    defined |= set(re.findall(r"^### (FX-[A-Z]+-\d+[a-z]?) ", FIXTURES_MD.read_text(), re.MULTILINE))
    assert defined == set(FIXTURE_IDS)


def test_every_fixture_id_is_tested():
    """Each FX id is named by some test: in another test file's text, in a test name or docstring here, or
    through COVERED_ELSEWHERE (whose named test must exist)."""
    covered = set()
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name == Path(__file__).name:
            for name, node in _test_functions(path).items():
                covered |= _ids_in(name) | _ids_in(ast.get_docstring(node) or "")
        else:
            covered |= _ids_in(path.read_text())
    for fixture_id, where in COVERED_ELSEWHERE.items():
        file_name, test_name = where.split("::")
        assert test_name in _test_functions(TESTS / file_name), f"{fixture_id}: {where} does not exist"
        covered.add(fixture_id)
    missing = sorted(set(FIXTURE_IDS) - covered, key=FIXTURE_IDS.index)
    assert not missing, f"fixtures without a test: {', '.join(missing)}"
