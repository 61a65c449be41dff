"""A3C: asynchronous advantage actor-critic (Mnih et al. 2016), truly asynchronous.

    python scripts/train.py agent=a3c env=cartpole                              # worker processes
    python scripts/train.py agent=a3c env=cartpole agent.backend=ray            # a local Ray instance
    python scripts/train.py agent=a3c env=cartpole agent.backend=ray agent.ray_address=auto   # a cluster

Each of `num_workers` workers owns an env (`envs_per_worker` copies), a copy of the model and its
own random streams, and loops: pull the current weights, play `num_steps` steps, compute the
gradient of A2C's loss (agents/a2c.py: a2c_loss)

    A      = R − V(s),  R = n-step return (r + γr' + ... + γⁿV(s_n); 0 after a termination,
             V(true final observation) after a truncation)
    loss   = −mean(A · log π(a|s)) + vf_coef·mean((V(s) − R)²) − ent_coef·entropy

clip it to global norm `max_grad_norm` (core.optim.clip_grad_norm_), and apply it to the shared
weights with the shared optimizer (core.optim's Adam or RMSprop), without waiting for the other
workers. `anneal_lr` makes the lr fall linearly to 0 over `total_timesteps` (all workers' env steps;
core.optim.lr_scheduler.LinearLR stepped to that count).

Devices: with `device=cuda` each worker's model copy, rollout and backward pass run on the GPU; the
shared weights and optimizer stay in host memory, so every update copies the weights in and the
gradient out (workers must start fresh: `start_method` spawn or forkserver). Evaluation is on the CPU.

Backends (agents/a3c_workers.py; agents/workers.py starts the processes and connects to Ray):
- "processes": `num_workers` processes (`start_method` "spawn" by default: a fresh interpreter, safe
  whatever threads the trainer runs). The trainer builds the model and its optimizer as every trainer
  does, then moves the optimizer into shared memory (core.optim's `share_memory_`): the weights, the
  optimizer's moments and its step counts, which every worker's copy of the optimizer updates in
  place with no lock: Hogwild! (Recht et al. 2011), as the A3C paper does (only the step counts
  advance under a lock, so every update counts). Between two steps of one worker, others may write:
  that staleness is the algorithm. `own_sessions`: Linux's default "autogroup" scheduling gives each
  session (a terminal, a job) one share of the CPUs, however many processes it runs, so on a machine
  busy with other sessions N workers in the trainer's session get the CPU of about one; with
  own_sessions each worker starts a session of its own (setsid) and competes as a separate job
  would, as Ray's workers do (docs/benchmarks.md shows both). Off by default: it takes more of a
  shared machine, and Ctrl-Z then suspends the trainer but not its workers.
- "ray": the same workers as Ray actors, possibly on other machines; a parameter-server actor
  holds the weights and the optimizer, applies each pushed gradient as it arrives (one at a time)
  and answers with the fresh weights. `ray` is the optional extra `rlgen-lab[ray]`; `ray_address`
  null starts a local Ray instance, "auto" or "host:port" joins a running cluster (whose nodes
  must have this repository importable).
The number of workers must lie in [1, 4 x CPUs]. The first Ctrl-C (or SIGTERM) stops the workers
after their update, checkpoints and returns; a failing or killed worker, and a killed trainer, are
handled as agents/workers.py describes.

The trainer's side is the run session (core/runtime/session.py). It polls the workers' counters
(5 to 10 times a second) and advances the session by the env steps, episodes and updates (the
session's iterations) all workers made since, so the budgets (`total_timesteps`, `total_episodes`:
over all workers and resumes), checkpoints every `checkpoint_every` env steps (default 100,000),
evaluations every `eval_every` env steps (of a copy of the weights taken then; `target_return`
stops the workers) and at the end are the session's. A checkpoint holds the model (the shared
weights), the optimizer's state dict, the counters and, in `extra`, the generation: each resume
starts new workers with fresh episodes and random streams of a new generation (asynchronous
training is not reproducible step for step).
Logged every `log_every_s` seconds: charts/episodic_return, charts/episodic_length, charts/SPS,
losses/{policy_loss, value_loss, entropy}, a3c/updates. Metrics, besides the usual: per worker
a3c/worker_updates, a3c/worker_env_steps, a3c/worker_cpu_s and a3c/worker_first_update_s /
a3c/worker_last_update_s (seconds since the start: overlapping periods show the workers ran
together), and a3c/env_steps_per_s (all workers' env steps over the span from the first update to
the last).
"""
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

import core
from agents.a3c_workers import BACKENDS, LossMeter, make_optimizer, worker_spec, worker_vectorization
from agents import check_each, derive_seed, with_one_blas_thread
from agents.actor_critic import (ActorCriticConfig, Optimizer, agent_session, build_model, log_episodes, make_envs,
                                 make_policy)
from agents.workers import max_workers
from core.runtime.choices import Choice
from core.runtime.config import config_object
from core.runtime.errors import ConfigError

__all__ = ["Config", "train", "make_policy"]
# the config's types
Backend = Choice("Backend", list(BACKENDS))
StartMethod = Choice("StartMethod", "spawn forkserver fork")
WorkerVectorization = Choice("WorkerVectorization", "sync native")


@dataclass
class Config(ActorCriticConfig):
    """A3C's settings: the budgets and evaluation intervals count the env steps of all workers together."""

    # besides these, the fields of ActorCriticConfig (agents/actor_critic.py, documented there) that A2C and PPO
    # have too: total_timesteps, total_episodes, num_steps, gamma, lr, anneal_lr, ent_coef, vf_coef,
    # max_grad_norm, normalize_advantage, hidden, activation, init, shared, distribution, log_std_init,
    # eval_every, target_return, eval_greedy; A3C's own defaults of some of them come first
    total_timesteps: int = 200_000
    num_steps: int = 20                    # n of the n-step returns (t_max in the paper)
    lr: float = 1e-3
    ent_coef: float = 0.01
    max_grad_norm: float = 40.0
    num_workers: int = 2
    backend: Backend = Backend.processes
    start_method: StartMethod = StartMethod.spawn  # the processes backend's
    own_sessions: bool = False             # start each worker process in a session of its own (see above)
    ray_address: Optional[str] = None      # null: a local Ray instance; "auto" or "host:port": a running cluster
    envs_per_worker: int = 1
    vectorization: Optional[WorkerVectorization] = None  # each worker's envs; null: env.vectorization
    optimizer: Optimizer = Optimizer.adam  # shared by all workers
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])   # adam
    alpha: float = 0.99                    # rmsprop
    eps: float = 1e-8
    log_every_s: float = 1.0               # the trainer logs (and workers report losses) this often

    def validate(self):
        if self.num_workers < 1 or (self.backend == "processes" and self.num_workers > max_workers()):
            raise ValueError(f"agent.num_workers must be between 1 and {max_workers()} (4 x the {os.cpu_count()} "
                             f"CPUs of this machine), got {self.num_workers}")
        super().validate()
        check_each(self, ("envs_per_worker",), ">= 1", lambda value: value >= 1)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas) or not 0 <= self.alpha < 1:
            raise ValueError(f"agent.betas must be two values in [0, 1) and agent.alpha in [0, 1), got "
                             f"{list(self.betas)} and {self.alpha}")
        check_each(self, ("eps", "log_every_s"), "> 0", lambda value: value > 0)


# ----- the trainer -----
class Progress:
    """The trainer's side of the workers' counters: each poll advances the session by the env steps,
    episodes and updates of all workers since the previous one and, every `log_every_s` seconds,
    logs the episodes and losses they reported."""

    def __init__(self, session, log_every_s):
        self.session, self.log_every_s = session, log_every_s
        self.seen = np.zeros(3, np.int64)  # env steps, updates and episodes of this run's workers so far
        self.episodes, self.losses = [], LossMeter()
        self.start = self.last_log = time.time()
        self.counters = self.times = None

    def update(self, counters, times, events, final=False):
        for kind, _, payload in events:
            if kind == "episode":
                self.episodes.append(payload)
                self.session.record_episodes([payload])
            elif kind == "losses" and payload:
                self.losses.add(payload)
        self.counters, self.times = counters.copy(), times.copy()
        steps, updates, episodes = (int(n) for n in self.counters.sum(axis=1) - self.seen)
        self.seen += (steps, updates, episodes)
        self.session.advance(steps, episodes=episodes, iterations=updates)
        if final or time.time() - self.last_log >= self.log_every_s:
            session = self.session
            mean_return = log_episodes(session.run, self.episodes, session.progress)
            session.log({f"losses/{name}": value for name, value in self.losses.pop().items()})
            session.log({"charts/SPS": session.sps(), "a3c/updates": session.iterations})
            if mean_return is not None:
                session.show(ret=mean_return)
            self.episodes, self.last_log = [], time.time()

    def worker_metrics(self):
        """Per worker: updates, env steps, CPU seconds, and when it made its first and last update
        (seconds since the start); none when no worker ran (a finished run resumed)."""
        if self.counters is None:
            return {}
        counters, times = self.counters, self.times
        started = times[0] > 0
        span = times[1][started].max() - times[0][started].min() if started.any() else 0.0
        return {"a3c/worker_updates": counters[1].tolist(), "a3c/worker_env_steps": counters[0].tolist(),
                "a3c/worker_cpu_s": times[2].tolist(),
                "a3c/worker_first_update_s": [float(t - self.start) if t else None for t in times[0]],
                "a3c/worker_last_update_s": [float(t - self.start) if t else None for t in times[1]],
                "a3c/env_steps_per_s": float(counters[0].sum() / span) if span > 0 else 0.0}


@with_one_blas_thread
def train(cfg, run):
    args = config_object(Config, cfg.agent)
    if run.device != "cpu" and args.backend == "processes" and args.start_method == "fork":
        raise ConfigError(f"device={run.device} needs worker processes that start fresh (a forked process cannot "
                          "use the parent's GPU context): set agent.start_method=spawn or forkserver")
    core.manual_seed(cfg.seed)
    # the spaces, and a clear error now for an env A3C cannot act in
    probe = make_envs(cfg.env, 1, cfg.seed, vectorization=worker_vectorization(cfg, args))
    model = build_model(args, probe.single_observation_space, probe.single_action_space, "A3C",
                        core.Generator(derive_seed(cfg.seed, "init")))
    probe.close()
    optimizer = make_optimizer(args, model.parameters())
    session = agent_session(run, cfg, args, "a3c", model, snapshot=True)
    session.track(model=model, optimizer=optimizer)
    session.extra["generation"] = session.extra.get("generation", -1) + 1  # new workers' random streams per resume
    progress = Progress(session, args.log_every_s)
    if session.running():  # else a finished run resumed: only the evaluation is left
        budget = (args.total_timesteps - session.progress,
                  None if args.total_episodes is None else args.total_episodes - session.episodes)
        spec = worker_spec(cfg, args, session.extra["generation"], budget)
        workers = BACKENDS[args.backend](args, model, optimizer, spec)
        try:
            while session.running() and not workers.done():
                progress.update(*workers.poll())
            progress.update(*workers.finish(), final=True)
        finally:
            workers.close()
    return session.finish(progress.worker_metrics())
