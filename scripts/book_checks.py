"""The books' fixtures and API demos as runnable checks: the chapter presets that verify a number the book
prints rather than train a model. Run through scripts/train.py (registered as `agent=book_check`; the env
the config names is not used, the presets pass cartpole).

    python scripts/train.py experiment=mtf8-ddqn-loss-fixture
    python scripts/train.py experiment=bdl7-gd-himmelblau agent.start=[1,0]

Checks (`agent.check`), each writing its numbers to metrics.json:
- dqn_loss (MTF ch. 8, FX-RL-1): the hand-computed DQN / Double-DQN loss of a Dense(2) Q-network,
  through agents.dqn's TD targets and loss: 9.8 for both;
- replay_buffer_demo (MTF ch. 8, FX-RL-9): TF-Agents' batched replay buffer (32 slots) sampled as
  sequences, shapes [batch, steps, ...features]; `SequenceReplayBuffer` below is that API;
- qcnn_params (TFMLP ch. 14, FX-PC-13 / FX-PC-31 / FX-PC-12): parameter counts of the Pac-Man
  Q-networks (CNN, and the MLP with 512 and 8 hidden units) built from core.nn layers;
- sac_smoke (MTF ch. 8): one soft actor-critic train step on a random batch with the book's dummy
  critic; the losses are random (not reproducible), the check is that they are finite;
- himmelblau (BDL ch. 7 §7.8, FX-OPT-1/2): plain gradient descent x -= lr·∇f(x) on Himmelblau's function
  f(x, y) = (x² + y − 11)² + (x + y² − 7)² from `start`, `steps` steps (the run session's unit; resumable);
  float32. Metrics opt/point, opt/x, opt/y, opt/f; the TensorBoard curve opt/f every `log_every` steps.
The first four report `check/...` and `check/passed` (also in check.txt of the run directory).
"""
import math
from dataclasses import dataclass, field
from typing import List

import numpy as np

import core
from core import nn, optim
from core.distributions import Normal
from core.runtime.choices import Choice
from core.runtime.config import config_object

Check = Choice("Check", "dqn_loss replay_buffer_demo qcnn_params sac_smoke himmelblau")  # the config's type
MAIN_METRIC = "check/passed"


@dataclass
class Config:
    check: Check = Check.dqn_loss
    # himmelblau only: the initial point, the learning rate and the number of gradient steps
    start: List[float] = field(default_factory=lambda: [4.0, 0.0])
    lr: float = 0.01
    steps: int = 200
    log_every: int = 1

    def validate(self):
        if len(self.start) != 2:
            raise ValueError(f"agent.start is the initial point (x, y) of Himmelblau's function; got {self.start}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"agent.lr must be a positive finite number, got {self.lr}")
        if self.steps < 1 or self.log_every < 1:
            raise ValueError(f"agent.steps and agent.log_every must be >= 1, got {self.steps} and {self.log_every}")


# ----- FX-RL-1: DQN / Double-DQN loss -----
def book_q_network():
    """MTF ch. 8's Q-net: one Dense(2), kernel [[2, 1], [1, 1]] (rows = inputs), bias [1, 1] (FX-ERR-3:
    the book prints the bias as a column; it is a vector)."""
    layer = nn.Linear(2, 2)
    layer.weight.data[...] = np.array([[2.0, 1.0], [1.0, 1.0]]).T  # core's Linear stores (out, in)
    layer.bias.data[...] = [1.0, 1.0]
    return layer


def dqn_loss_check():
    from agents.dqn import td_loss, td_targets
    q_net = target_net = book_q_network()
    obs = np.array([[1, 2], [3, 4]], np.float32)
    actions = np.array([0, 1])
    rewards, discounts = np.array([10, 20], np.float32), np.array([0.9, 0.9], np.float32)
    next_obs = core.tensor(np.array([[-5, 6], [-7, 8]], np.float32))
    with core.no_grad():
        next_q = target_net(next_obs).numpy()
        next_q_online = q_net(next_obs).numpy()
    losses = {}
    for name, online in (("dqn", None), ("double_dqn", next_q_online)):
        targets = td_targets(rewards, discounts, next_q, online)
        loss, td_errors, _ = td_loss(q_net, obs, actions, targets, loss="huber", huber_delta=1.0)
        losses[name] = (float(loss.item()), np.asarray(td_errors).tolist(), targets.tolist())
    passed = all(abs(loss - 9.8) < 1e-5 for loss, _, _ in losses.values())
    return {"check/dqn_loss": losses["dqn"][0], "check/double_dqn_loss": losses["double_dqn"][0],
            "check/td_targets": losses["dqn"][2], "check/td_errors": losses["dqn"][1], "check/passed": float(passed)}


# ----- FX-RL-9: TF-Agents' uniform replay buffer, sampled as sequences -----
class SequenceReplayBuffer:
    """TF-Agents' TFUniformReplayBuffer as MTF ch. 8 uses it: `slots` parallel rings (its batch_size)
    of `max_length` items each; an item is a dict of arrays with the shapes of `spec` ({name: (shape,
    dtype)}). `add` takes one item per slot ([slots, ...] arrays); `sample(batch, steps)` draws
    `batch` runs of `steps` consecutive items from random slots ([batch, steps, ...]); `gather_all`
    returns everything stored ([slots, stored, ...])."""

    def __init__(self, spec, slots, max_length):
        self.spec, self.slots, self.max_length = spec, slots, max_length
        self.storage = {name: np.zeros((slots, max_length, *shape), dtype) for name, (shape, dtype) in spec.items()}
        self.added = 0

    def add(self, items):
        for name, (shape, _) in self.spec.items():
            value = np.asarray(items[name])
            if value.shape != (self.slots, *shape):
                raise ValueError(f"add: {name} must have shape {(self.slots, *shape)}, got {value.shape}")
            self.storage[name][:, self.added % self.max_length] = value
        self.added += 1

    def __len__(self):
        return min(self.added, self.max_length)

    def _order(self):
        """Ring positions from the oldest stored item to the newest."""
        return (np.arange(len(self)) + max(self.added - self.max_length, 0)) % self.max_length

    def sample(self, batch_size, steps, rng):
        if steps > len(self):
            raise ValueError(f"cannot sample runs of {steps} steps from {len(self)} stored items")
        slots = rng.integers(self.slots, size=batch_size)
        starts = rng.integers(len(self) - steps + 1, size=batch_size)
        positions = self._order()[starts[:, None] + np.arange(steps)]
        return {name: array[slots[:, None], positions] for name, array in self.storage.items()}

    def gather_all(self):
        return {name: array[:, self._order()] for name, array in self.storage.items()}


def replay_buffer_demo_check(seed):
    spec = {"action": ((3,), np.float32), "lidar": ((5,), np.float32), "camera": ((3, 2), np.float32)}
    buffer = SequenceReplayBuffer(spec, slots=32, max_length=1000)
    for step in range(6):  # the book adds batches of constant tensors
        buffer.add({name: np.full((32, *shape), step, dtype) for name, (shape, dtype) in spec.items()})
    sample = buffer.sample(4, 2, np.random.default_rng(seed))
    gathered = buffer.gather_all()
    sample_shapes = [list(sample[name].shape) for name in spec]
    consecutive = bool(np.all(np.diff(sample["action"][..., 0], axis=1) == 1))
    passed = sample_shapes == [[4, 2, 3], [4, 2, 5], [4, 2, 3, 2]] and consecutive
    return {"check/sample_shapes": sample_shapes, "check/gather_all_shapes": [list(gathered[n].shape) for n in spec],
            "check/passed": float(passed)}


# ----- FX-PC-13 / FX-PC-31 / FX-PC-12: the Pac-Man Q-networks -----
def pacman_cnn():
    """TFMLP ch. 14's CNN on 210x160x3 frames (NCHW here): Conv2D(16, 5, valid, relu) → MaxPool(2) →
    Flatten → Dense(512, relu) → Dense(9, softmax). The softmax has no parameters and is left out."""
    return nn.Sequential(nn.Conv2d(3, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16 * 103 * 78, 512), nn.ReLU(), nn.Linear(512, 9))


def pacman_mlp(hidden):
    """TFMLP ch. 14's MLP Q-network: Flatten(210x160x3) → Dense(hidden, relu) → Dense(9, softmax)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(210 * 160 * 3, hidden), nn.ReLU(), nn.Linear(hidden, 9))


def qcnn_params_check():
    cnn = pacman_cnn()
    layers = [m.num_parameters() for m in cnn if m.num_parameters()]
    with core.no_grad():
        conv_shape = list(cnn[0](core.zeros(1, 3, 210, 160)).shape[1:])
    total = cnn.num_parameters()
    mlp_512, mlp_8 = pacman_mlp(512).num_parameters(), pacman_mlp(8).num_parameters()
    passed = (layers, total, mlp_512, mlp_8) == ([1216, 65_815_040, 4617], 65_820_873, 51_614_729, 806_489)
    return {"check/param_count": total, "check/layer_params": layers, "check/conv_output_shape": conv_shape,
            "check/mlp512_param_count": mlp_512, "check/mlp8_param_count": mlp_8, "check/passed": float(passed)}


# ----- SAC train step (smoke) -----
class SquashedGaussianActor(nn.Module):
    """obs → Dense(10, relu) → (mean, log std) of a normal, squashed by tanh into [-1, 1]."""

    def __init__(self, obs_dim, action_dim, hidden=10):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * action_dim))

    def forward(self, obs, generator):
        mean, log_std = self.body(obs).chunk(2, axis=-1)
        dist = Normal(mean, log_std.clip(-20.0, 2.0).exp())
        raw = dist.rsample(generator=generator)
        action = raw.tanh()
        # change of variables through tanh: log π(a) = log N(raw) − Σ log(1 − tanh²(raw))
        log_prob = (dist.log_prob(raw) - (1 - action * action + 1e-6).log()).sum(axis=-1)
        return action, log_prob


def dummy_critic(obs, action):
    """The book's dummy critic: q = obs·[[0], [1]] + action·[[1]]."""
    return obs[:, 1] + action[:, 0]


def sac_smoke_check(seed):
    core.manual_seed(seed)  # the actor's initial weights
    generator = core.Generator(seed)
    rng = np.random.default_rng(seed)
    actor = SquashedGaussianActor(obs_dim=2, action_dim=1)
    log_alpha = core.zeros(1, requires_grad=True)
    actor_optimizer = optim.Adam(actor.parameters(), lr=1e-3, eps=1e-8)   # TF1-style Adam (RL-11)
    alpha_optimizer = optim.Adam([log_alpha], lr=1e-3, eps=1e-8)
    gamma, target_entropy = 0.99, -1.0
    # a random trajectory batch with outer dims (3, 2): 3 transitions from step 0 to step 1
    obs = core.tensor(rng.uniform(0, 1, (3, 2, 2)).astype(np.float32))
    actions = core.tensor(rng.uniform(-1, 1, (3, 2, 1)).astype(np.float32))
    rewards = core.tensor(rng.standard_normal((3,)).astype(np.float32))
    s, a, s_next = obs[:, 0], actions[:, 0], obs[:, 1]
    alpha = log_alpha.exp().detach()
    with core.no_grad():
        next_action, next_log_prob = actor(s_next, generator)
        targets = rewards + gamma * (dummy_critic(s_next, next_action) - alpha * next_log_prob)
    q = dummy_critic(s, a)
    critic_loss = 2 * ((q - targets) ** 2).mean()  # two identical critics, each its mean squared TD error
    new_action, log_prob = actor(s, generator)
    actor_loss = (alpha * log_prob - dummy_critic(s, new_action)).mean()
    alpha_loss = -(log_alpha * (log_prob.detach() + target_entropy)).mean()
    for optimizer, loss in ((actor_optimizer, actor_loss), (alpha_optimizer, alpha_loss)):
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    losses = [float(x.item()) for x in (critic_loss, actor_loss, alpha_loss)]
    return {"check/critic_loss": losses[0], "check/actor_loss": losses[1], "check/alpha_loss": losses[2],
            "check/total_loss": sum(losses), "check/passed": float(all(np.isfinite(losses)))}


# ----- FX-OPT-1 / FX-OPT-2: gradient descent on Himmelblau's function -----
def himmelblau(point):
    x, y = point[0], point[1]
    return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2


def minimize_himmelblau(args: Config, cfg, run) -> dict:
    """BDL ch. 7's descent: `args.steps` plain gradient steps from `args.start`; resumable."""
    params = nn.ParameterDict({"point": nn.Parameter(core.tensor(list(args.start), device=run.device))})
    point = params["point"]
    opt = optim.SGD([point], lr=args.lr)
    session = run.session("himmelblau", "steps", args.steps, checkpoint_every=cfg.get("checkpoint_every"))
    session.track(params=params, optimizer=opt)
    value = himmelblau(point)
    while session.running():
        opt.zero_grad()
        value.backward()
        opt.step()
        value = himmelblau(point)
        step = session.progress + 1
        run.check_finite("opt/f", value.item(), step)  # the step just taken (the session counts it below)
        if step % args.log_every == 0 or step == 1:
            session.log({"opt/f": value.item()}, step)
        session.advance(1)
    x, y = point.detach().numpy().tolist()
    return session.finish({"opt/point": [x, y], "opt/x": x, "opt/y": y, "opt/f": value.item()})


def run_check(args: Config, seed, run) -> dict:
    """One of the one-shot checks; its numbers also go to check.txt and TensorBoard."""
    if args.check == "dqn_loss":
        metrics = dqn_loss_check()
    elif args.check == "replay_buffer_demo":
        metrics = replay_buffer_demo_check(seed)
    elif args.check == "qcnn_params":
        metrics = qcnn_params_check()
    else:
        metrics = sac_smoke_check(seed)
    lines = [f"{key}: {value}" for key, value in sorted(metrics.items())]
    run.logger.text("check/result", "<pre>" + "\n".join(lines) + "</pre>")
    (run.dir / "check.txt").write_text("\n".join(lines) + "\n")
    run.logger.scalar("check/passed", metrics["check/passed"], 0)
    return {**metrics, "check/name": str(args.check)}  # the plain string (the checkpoint holds the metrics)


def train(cfg, run):
    args = config_object(Config, cfg.agent)
    if args.check == "himmelblau":
        return minimize_himmelblau(args, cfg, run)
    session = run.session(str(args.check), "checks", 1)  # plain strings: a checkpoint holds builtins only
    session.track()
    if session.running():  # a resumed finished check reports its saved numbers
        session.extra["metrics"] = run_check(args, cfg.seed, run)
        session.advance(1)
    return session.finish(session.extra.get("metrics"))
