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

Backends:
- "processes": `num_workers` processes (multiprocessing, `start_method` "spawn" by default: a
  fresh interpreter, safe whatever threads the parent runs (TensorBoard's writer thread); "fork"
  starts faster but copies a parent that may hold locks; "forkserver" is in between). The trainer
  builds the model and its optimizer as every trainer does, then moves the optimizer into shared
  memory (core.optim's `share_memory_`): the weights, the optimizer's moments and its step counts,
  which every worker's copy of the optimizer updates in place with no lock: Hogwild! (Recht et al.
  2011), as the A3C paper does (only the step counts advance under a lock, so every update counts).
  Between two steps of one worker, others may write: that staleness is the algorithm.
  `own_sessions`: Linux's default "autogroup" scheduling gives each session (a terminal, a job) one
  share of the CPUs, however many processes it runs, so on a machine busy with other sessions N
  workers in the trainer's session get the CPU of about one; with own_sessions each worker starts a
  session of its own (setsid) and competes as a separate job would, as Ray's workers do
  (docs/benchmarks.md shows both). Off by default: it takes more of a shared machine, and Ctrl-Z
  then suspends the trainer but not its workers.
- "ray": the same workers as Ray actors, possibly on other machines; a parameter-server actor
  holds the weights and the optimizer, applies each pushed gradient as it arrives (one at a time)
  and answers with the fresh weights. `ray` is the optional extra `rlgen-lab[ray]`; `ray_address`
  null starts a local Ray instance, "auto" or "host:port" joins a running cluster (whose nodes
  must have this repository importable).

Start-up and shutdown. The number of workers must lie in [1, 4 x CPUs]. Workers ignore Ctrl-C:
the first Ctrl-C (or SIGTERM) reaches the trainer, which raises a shared stop flag, waits for the
workers to finish their update, checkpoints and returns; a second Ctrl-C exits at once, and the
workers, seeing their parent gone (Linux parent-death signal, and a parent-pid check every
update), exit too. A worker that raises sends its traceback and the trainer stops everyone and
raises it; a worker that dies silently (killed) is reported with its exit code.

Checkpoints every `checkpoint_every` global updates and at the end hold a snapshot of the
shared weights (as the model's state dict), the optimizer's state dict and the counters; a resumed
run continues from them with fresh episodes and new random streams (asynchronous training is not
reproducible step for step). `total_timesteps` (and `total_episodes`, when set) count over all
workers and over resumes.
Logged: charts/episodic_return, charts/episodic_length, charts/SPS, losses/{policy_loss,
value_loss, entropy}, a3c/updates. Metrics, besides the usual: per worker a3c/worker_updates,
a3c/worker_env_steps, a3c/worker_cpu_s and a3c/worker_first_update_s / a3c/worker_last_update_s
(seconds since the start: overlapping periods show the workers ran together), and
a3c/env_steps_per_s (all workers' env steps over the span from the first update to the last).
"""
import ctypes
import multiprocessing as mp
import os
import queue
import signal
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
from omegaconf import OmegaConf

import core
from agents.a2c import a2c_loss
from agents.actor_critic import (RolloutBuffer, build_model, check_actor_critic_config, check_each, collect_rollout,
                                 derive_seed, evaluation_envs, evaluation_metrics, lr_schedule, make_envs, make_policy,
                                 n_step_returns, one_blas_thread)
from core import nn, optim
from core.runtime.run import ConfigError, NonFiniteError
from core.tensor import Tensor
from envs import VectorStepper

__all__ = ["Config", "train", "make_policy", "make_optimizer", "apply_gradient", "max_workers"]
BACKENDS = ("processes", "ray")
START_METHODS = ("spawn", "forkserver", "fork")
OPTIMIZERS = ("adam", "rmsprop")
RAY_EXTRA = "pip install 'rlgen-lab[ray]'"
REPO_ROOT = Path(__file__).resolve().parents[1]


def max_workers():
    """The most workers a run may start: 4 per CPU (more only adds contention)."""
    return 4 * (os.cpu_count() or 1)


@dataclass
class Config:
    total_timesteps: int = 200_000         # env steps, all workers together
    total_episodes: Optional[int] = None   # also stop after this many episodes, all workers together
    num_workers: int = 2
    backend: str = "processes"             # processes | ray
    start_method: str = "spawn"            # spawn | forkserver | fork (processes backend)
    own_sessions: bool = False             # start each worker process in a session of its own (see below)
    ray_address: Optional[str] = None      # null: a local Ray instance; "auto" or "host:port": a running cluster
    envs_per_worker: int = 1
    vectorization: Optional[str] = None    # each worker's envs: sync | native; null: env.vectorization
    num_steps: int = 20                    # n of the n-step returns (t_max in the paper)
    gamma: float = 0.99
    lr: float = 1e-3
    anneal_lr: bool = False                # lr falls linearly to 0 over total_timesteps, as in the A3C paper
    optimizer: str = "adam"                # adam | rmsprop, shared by all workers
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])   # adam
    alpha: float = 0.99                    # rmsprop
    eps: float = 1e-8
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 40.0            # 0: no clipping
    normalize_advantage: bool = False      # standardise each rollout's advantages (as A2C's option)
    hidden: List[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    init: str = "orthogonal"
    shared: bool = False
    distribution: str = "auto"             # auto | categorical | gaussian
    log_std_init: float = 0.0
    log_every_s: float = 1.0               # the trainer logs (and workers report losses) this often
    eval_greedy: bool = True

    def validate(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"agent.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.num_workers < 1 or (self.backend == "processes" and self.num_workers > max_workers()):
            raise ValueError(f"agent.num_workers must be between 1 and {max_workers()} (4 x the {os.cpu_count()} "
                             f"CPUs of this machine), got {self.num_workers}")
        if self.start_method not in START_METHODS:
            raise ValueError(f"agent.start_method must be one of {', '.join(START_METHODS)}, got {self.start_method!r}")
        check_actor_critic_config(self)
        check_each(self, ("envs_per_worker",), ">= 1", lambda value: value >= 1)
        if self.vectorization not in (None, "sync", "native"):
            raise ValueError(f"agent.vectorization must be sync, native or null, got {self.vectorization!r}")
        check_each(self, ("gamma",), "in [0, 1]", lambda value: 0 <= value <= 1)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"agent.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas) or not 0 <= self.alpha < 1:
            raise ValueError(f"agent.betas must be two values in [0, 1) and agent.alpha in [0, 1), got "
                             f"{list(self.betas)} and {self.alpha}")
        check_each(self, ("eps", "log_every_s"), "> 0", lambda value: value > 0)


# ----- the optimizer: core.optim's, in shared memory (processes) or in the parameter server (Ray) -----
def make_optimizer(args, params):
    """Adam (`betas`) or RMSprop (`alpha`) with the config's lr and eps."""
    options = {"betas": args.betas} if args.optimizer == "adam" else {"alpha": args.alpha}
    return optim.create(params, args.optimizer, lr=args.lr, eps=args.eps, **options)


def apply_gradient(optimizer, scheduler, grads, env_steps):
    """One asynchronous update: `grads` (arrays in the order of the optimizer's parameters, None for
    none) become the gradients, the lr follows `scheduler` to `env_steps` (all workers' so far), and
    the optimizer steps."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p, g in zip(params, grads):
        p.grad = None if g is None else Tensor._make(g)
    scheduler.step(env_steps)
    optimizer.step()


# ----- one worker: env, model copy, random stream; the same code on both backends -----
class Worker:
    """Builds its envs and model copy from a plain-data `spec` (see `worker_spec`);
    `gradient(weights)` plays one n-step rollout with those weights and returns its loss gradient."""

    def __init__(self, rank, spec):
        self.rank, self.args = rank, spec["agent"]
        env_cfg = OmegaConf.create(spec["env"])
        seed = derive_seed(spec["seed"], "worker", rank, spec["generation"])
        self.envs = make_envs(env_cfg, self.args.envs_per_worker, seed % 2**31)
        self.model = build_model(self.args, self.envs.single_observation_space, self.envs.single_action_space, "A3C")
        self.params = list(self.model.parameters())
        self.generator = core.Generator(derive_seed(seed, "actions"))
        self.stepper = VectorStepper(self.envs)
        self.stepper.reset(seed=seed % 2**31)
        self.buffer = RolloutBuffer(self.args.num_steps, self.envs)

    def gradient(self, weights):
        """(gradients, env steps, finished episodes, {loss part: float}) of one rollout played with
        `weights` (arrays in the order of the model's parameters: the current shared ones); the
        gradients are arrays (None where a parameter got none), clipped to global norm max_grad_norm."""
        for p, w in zip(self.params, weights):
            p.data[...] = w  # pull the current shared weights into the local copy
        finished = collect_rollout(self.stepper, self.model, self.buffer, self.generator)
        buffer, args = self.buffer, self.args
        returns = n_step_returns(buffer.rewards, buffer.next_values, buffer.terminated, buffer.truncated, args.gamma)
        loss, parts = a2c_loss(self.model, buffer, returns - buffer.values, returns, args)
        if not np.isfinite(loss.data):
            raise FloatingPointError(f"A3C worker {self.rank}: the loss is {float(loss.data)}; lower agent.lr or "
                                     "agent.max_grad_norm")
        self.model.zero_grad()
        loss.backward()
        if args.max_grad_norm:
            optim.clip_grad_norm_(self.params, args.max_grad_norm)
        grads = [None if p.grad is None else p.grad.data for p in self.params]
        return grads, buffer.num_steps * buffer.num_envs, finished, {name: float(v.data) for name, v in parts.items()}


def worker_vectorization(cfg, args):
    """Workers step their few envs in-process: sync, or native; never async."""
    return args.vectorization or ("native" if cfg.env.vectorization == "native" else "sync")


def budget_spent(env_steps, episodes, budget):
    """Whether `env_steps` and `episodes` (all workers' since this run started) used up `budget`:
    (env steps left, episodes left or None), what is left of the config's budgets after a resume."""
    steps_left, episodes_left = budget
    return env_steps >= steps_left or (episodes_left is not None and episodes >= episodes_left)


def worker_spec(cfg, args, generation, budget):
    """What a worker needs, as plain picklable data; the workers stop when they have used up
    `budget` between them (see `budget_spent`)."""
    env = {**OmegaConf.to_container(cfg.env), "vectorization": worker_vectorization(cfg, args)}
    return {"env": env, "agent": args, "seed": cfg.seed, "generation": generation, "budget": budget}


class LossMeter:
    """Running sums of the loss parts between two reports."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, parts):
        for name, value in parts.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def pop(self):
        means = {name: total / self.count for name, total in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return means


# ----- processes backend -----
class SharedArrays:
    """The RawArrays the trainer and its workers share besides the optimizer, and numpy views of them
    (`views()`, made again in each process: RawArrays pickle into the children, numpy views do not)."""

    def __init__(self, ctx, num_workers):
        self.raw = {"stop": ctx.RawArray(ctypes.c_int64, 1),
                    # per worker: env steps, updates, episodes
                    "counters": ctx.RawArray(ctypes.c_int64, 3 * num_workers),
                    # per worker: time.time() of the first update's start and of the last update's end,
                    # and the CPU seconds the worker used in between
                    "times": ctx.RawArray(ctypes.c_double, 3 * num_workers)}
        self.num_workers = num_workers

    def views(self):
        v = {name: np.ctypeslib.as_array(raw) for name, raw in self.raw.items()}
        v["counters"] = v["counters"].reshape(3, self.num_workers)
        v["times"] = v["times"].reshape(3, self.num_workers)
        return v


def _die_with_parent():
    """Linux: have the kernel send SIGTERM to this process when its parent dies (no orphans even if
    the trainer is SIGKILLed); elsewhere the parent-pid check in the worker loop does it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _process_worker(rank, spec, optimizer, shared, events, parent_pid):
    """A worker process's main loop (see the module docstring); `optimizer` is the trainer's, in shared memory."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's; it stops us through the flag
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker would inherit the trainer's handler
    if spec["agent"].own_sessions:
        os.setsid()
    _die_with_parent()
    try:
        s = shared.views()
        args = spec["agent"]
        worker = Worker(rank, spec)
        weights = [p.data for group in optimizer.param_groups for p in group["params"]]  # the shared ones
        scheduler = lr_schedule(optimizer, args.anneal_lr, args.total_timesteps)
        steps_before = args.total_timesteps - spec["budget"][0]  # by earlier runs of a resumed training
        losses, last_report = LossMeter(), time.time()
        with one_blas_thread():  # one per worker: the workers are the parallelism
            while not s["stop"][0] and os.getppid() == parent_pid:
                started, cpu = time.time(), time.process_time()
                grads, steps, finished, parts = worker.gradient(weights)
                # Hogwild!: straight into the shared weights, no lock
                apply_gradient(optimizer, scheduler, grads, steps_before + int(s["counters"][0].sum()))
                ended = time.time()
                if s["times"][0, rank] == 0:
                    s["times"][0, rank], cpu_start = started, cpu
                s["times"][1:, rank] = ended, time.process_time() - cpu_start
                s["counters"][:, rank] += (steps, 1, len(finished))
                losses.add(parts)
                for episode in finished:
                    events.put(("episode", rank, (episode.episodic_return, episode.length)))
                if ended - last_report >= args.log_every_s:
                    events.put(("losses", rank, losses.pop()))
                    last_report = ended
                if budget_spent(s["counters"][0].sum(), s["counters"][2].sum(), spec["budget"]):
                    s["stop"][0] = 1
        events.put(("done", rank, None))
    except BaseException as e:  # noqa: BLE001  (anything, even SystemExit, is reported before the worker goes)
        events.put(("error", rank, (type(e).__name__, traceback.format_exc())))
        raise SystemExit(1)


@contextmanager
def _worker_start_conditions():
    """Start workers with SIGINT ignored (a spawned interpreter keeps an ignored SIGINT ignored)
    and with one BLAS thread each; the trainer's own handler and environment come back after."""
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved_env = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class WorkerError(RuntimeError):
    """A worker failed; the message holds its traceback (or its exit code)."""


def _stop_processes(processes, events, views, on_event, timeout=15.0):
    """Raise the stop flag, wait for every worker to finish its update and exit (still reading the
    event queue, so none blocks writing to it), then terminate and finally kill stragglers."""
    views["stop"][0] = 1
    deadline = time.time() + timeout
    while any(p.is_alive() for p in processes) and time.time() < deadline:
        _drain(events, on_event, wait=0.05)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(2.0)
        if p.is_alive():
            p.kill()
            p.join()
    _drain(events, on_event, wait=0.0)


def _drain(events, on_event, wait):
    """Handle every queued event; wait up to `wait` seconds for the first."""
    try:
        event = events.get(timeout=wait) if wait else events.get_nowait()
        while True:
            on_event(event)
            event = events.get_nowait()
    except queue.Empty:
        pass


def _run_processes(cfg, args, run, model, state, monitor):
    ctx = mp.get_context(args.start_method)
    optimizer = make_optimizer(args, model.parameters())
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    optimizer.share_memory_(ctx)  # the model's parameters are views of the shared weights from here on
    shared = SharedArrays(ctx, args.num_workers)
    views = shared.views()
    spec = worker_spec(cfg, args, monitor.generation, monitor.remaining)
    events = ctx.Queue()
    processes = [ctx.Process(target=_process_worker, args=(rank, spec, optimizer, shared, events, os.getpid()),
                             name=f"a3c-worker-{rank}", daemon=True) for rank in range(args.num_workers)]
    errors = []

    def on_event(event):
        kind, rank, payload = event
        if kind == "error":
            error_type, trace = payload
            error = NonFiniteError if error_type == "FloatingPointError" else WorkerError
            errors.append(error(f"A3C worker {rank} failed:\n{trace}"))
        else:
            monitor.event(kind, rank, payload)

    with _worker_start_conditions():
        for p in processes:
            p.start()
    try:
        while True:
            _drain(events, on_event, wait=0.1)
            if errors:
                break
            dead = [(rank, p.exitcode) for rank, p in enumerate(processes) if p.exitcode not in (None, 0)]
            if dead:
                _drain(events, on_event, wait=0.5)  # its traceback may still be on the way
                if not errors:
                    errors.append(WorkerError("; ".join(
                        f"A3C worker {rank} died with exit code {code}"
                        + (f" (signal {signal.Signals(-code).name})" if code < 0 else "") for rank, code in dead)))
                break
            if all(p.exitcode == 0 for p in processes) or run.should_stop():
                break
            monitor.tick(views["counters"], views["times"], optimizer.state_dict)
    finally:
        _stop_processes(processes, events, views, on_event)
    if errors:
        raise errors[0]
    monitor.finish(views["counters"], views["times"])
    return optimizer.state_dict()


# ----- Ray backend -----
class ParameterServer:
    """Holds the weights (arrays in the order of the model's parameters) and their optimizer; applies
    each pushed gradient as it arrives (an actor runs one method call at a time) and answers with the
    fresh weights."""

    def __init__(self, args, weights, num_workers, budget, state=None):
        self.params = [nn.Parameter(w) for w in weights]
        self.optimizer = make_optimizer(args, self.params)
        if state is not None:
            self.optimizer.load_state_dict(state)
        self.scheduler = lr_schedule(self.optimizer, args.anneal_lr, args.total_timesteps)
        self.budget, self.stop = budget, False
        self.steps_before = args.total_timesteps - budget[0]
        self.counters = np.zeros((3, num_workers), np.int64)
        self.times = np.zeros((3, num_workers))
        self.events = []

    def pull(self):
        return [p.data for p in self.params]

    def push(self, rank, grads, steps, episodes, started, cpu_seconds, losses):
        """Apply a worker's gradients; returns (fresh weights, whether to stop)."""
        apply_gradient(self.optimizer, self.scheduler, grads, self.steps_before + int(self.counters[0].sum()))
        if self.times[0, rank] == 0:
            self.times[0, rank] = started
        self.times[1:, rank] = time.time(), cpu_seconds
        self.counters[:, rank] += (steps, 1, len(episodes))
        self.events += [("episode", rank, episode) for episode in episodes]
        if losses:
            self.events.append(("losses", rank, losses))
        self.stop = self.stop or budget_spent(self.counters[0].sum(), self.counters[2].sum(), self.budget)
        return self.pull(), self.stop

    def request_stop(self):
        self.stop = True

    def progress(self):
        """Counters, update times and the events since the last call."""
        events, self.events = self.events, []
        return self.counters.copy(), self.times.copy(), events

    def state_dict(self):
        """(copies of the weights, the optimizer's state dict)."""
        return [p.data.copy() for p in self.params], self.optimizer.state_dict()


class RayWorker:
    """A Worker as a Ray actor: `run` loops pull, rollout, push until the server says stop."""

    def __init__(self, rank, spec):
        self.worker, self.rank = Worker(rank, spec), rank
        self.log_every_s = spec["agent"].log_every_s

    def run(self, server):
        import ray
        weights, stop = ray.get(server.pull.remote()), False
        losses, last_report, cpu_start = LossMeter(), time.time(), time.process_time()
        with one_blas_thread():
            while not stop:
                started = time.time()
                grads, steps, finished, parts = self.worker.gradient(weights)
                losses.add(parts)
                report = losses.pop() if started - last_report >= self.log_every_s else None
                last_report = started if report else last_report
                episodes = [(e.episodic_return, e.length) for e in finished]
                weights, stop = ray.get(server.push.remote(self.rank, grads, steps, episodes, started,
                                                           time.process_time() - cpu_start, report))


def _connect_ray(address, num_workers):
    """Import Ray and join (or start) the instance; ConfigError with what to do when that fails."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"agent.backend=ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    if address not in (None, "auto", "local"):
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        except (OSError, ValueError) as e:
            raise ConfigError(f"the Ray cluster at agent.ray_address={address!r} does not answer ({e}); start one "
                              "with `ray start --head`, or set agent.ray_address=null for a local instance") from None
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    try:
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": python_path, "OPENBLAS_NUM_THREADS": "1",
                                           "OMP_NUM_THREADS": "1"}},
                 **({"num_cpus": max(num_workers + 1, os.cpu_count() or 1)} if address is None else {}))
    except (ConnectionError, RuntimeError) as e:
        raise ConfigError(f"cannot connect to Ray at agent.ray_address={address!r}: {str(e).splitlines()[0]}") from None
    finally:
        for signum, handler in handlers.items():  # ray.init takes SIGTERM; Ctrl-C/SIGTERM stay the trainer's
            signal.signal(signum, handler)
    cpus = ray.cluster_resources().get("CPU", 0)
    if num_workers > 4 * cpus:
        ray.shutdown()
        raise ConfigError(f"agent.num_workers={num_workers} is more than 4 x the {int(cpus)} CPUs of the Ray cluster")
    return ray


def _run_ray(cfg, args, run, model, state, monitor):
    ray = _connect_ray(args.ray_address, args.num_workers)
    params = list(model.parameters())

    def snapshot():
        """The server's optimizer state; its weights go into the trainer's model (for the checkpoint)."""
        weights, optimizer_state = ray.get(server.state_dict.remote())
        for p, w in zip(params, weights):
            p.data[...] = w
        return optimizer_state

    try:
        server = ray.remote(num_cpus=0)(ParameterServer).remote(
            args, [p.data for p in params], args.num_workers, monitor.remaining,
            None if state is None else state["optimizer"])
        spec = worker_spec(cfg, args, monitor.generation, monitor.remaining)
        workers = [ray.remote(num_cpus=1)(RayWorker).remote(rank, spec) for rank in range(args.num_workers)]
        pending = [w.run.remote(server) for w in workers]
        try:
            while pending and not run.should_stop():
                finished, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
                ray.get(finished)  # a failed worker raises here, with its traceback
                counters, times, events = ray.get(server.progress.remote())
                for kind, rank, payload in events:
                    monitor.event(kind, rank, payload)
                monitor.tick(counters, times, snapshot)
            ray.get(server.request_stop.remote())
            ray.get(pending)
        except ray.exceptions.RayError as e:
            raise WorkerError(f"an A3C Ray worker failed:\n{e}") from None
        finally:
            for w in workers:
                ray.kill(w)
        counters, times, events = ray.get(server.progress.remote())
        for kind, rank, payload in events:
            monitor.event(kind, rank, payload)
        monitor.finish(counters, times)
        return snapshot()
    finally:
        ray.shutdown()


# ----- the trainer -----
class Monitor:
    """The trainer's side of a run, whatever the backend: logging, progress, periodic checkpoints."""

    def __init__(self, cfg, args, run, state, model):
        self.cfg, self.args, self.run, self.model = cfg, args, run, model
        self.generation = 0 if state is None else state["generation"] + 1  # fresh random streams per resume
        self.base = {"env_steps": 0, "updates": 0, "episodes": 0, "wall_s": 0.0} if state is None else state["totals"]
        self.start = time.time()
        self.episodes, self.losses = [], LossMeter()
        self.last_log, self.last_steps = self.start, 0
        every = cfg.checkpoint_every
        self.next_checkpoint = (self.base["updates"] // every + 1) * every if every else None
        self.bar = run.logger.progress(args.total_timesteps, "a3c")
        self.bar.update(min(self.base["env_steps"], args.total_timesteps))
        self.totals = dict(self.base)
        # a resumed run finishes the budgets
        self.remaining = (args.total_timesteps - self.base["env_steps"],
                          None if args.total_episodes is None else args.total_episodes - self.base["episodes"])
        self.worker_stats = {}

    def event(self, kind, rank, payload):
        if kind == "episode":
            self.episodes.append(payload)
        elif kind == "losses" and payload:
            self.losses.add(payload)

    def _totals(self, counters):
        return {"env_steps": self.base["env_steps"] + int(counters[0].sum()),
                "updates": self.base["updates"] + int(counters[1].sum()),
                "episodes": self.base["episodes"] + int(counters[2].sum()),
                "wall_s": self.base["wall_s"] + time.time() - self.start}

    def tick(self, counters, times, optimizer_state):
        now = time.time()
        self.totals = self._totals(counters)
        step = self.totals["env_steps"]
        if now - self.last_log >= self.args.log_every_s:
            logger = self.run.logger
            if self.episodes:
                returns, lengths = zip(*self.episodes)
                logger.scalars({"charts/episodic_return": float(np.mean(returns)),
                                "charts/episodic_length": float(np.mean(lengths))}, step)
                self.bar.set_postfix(ret=float(np.mean(returns)))
                self.episodes = []
            logger.scalars({f"losses/{name}": value for name, value in self.losses.pop().items()}, step)
            logger.scalars({"charts/SPS": (step - self.last_steps) / (now - self.last_log),
                            "a3c/updates": self.totals["updates"]}, step)
            self.last_log, self.last_steps = now, step
            self.bar.update(min(step, self.args.total_timesteps) - self.bar.n)
        if self.next_checkpoint and self.totals["updates"] >= self.next_checkpoint:
            self.checkpoint(optimizer_state())
            self.next_checkpoint += self.cfg.checkpoint_every

    def checkpoint(self, optimizer_state):
        """Save the model (whose parameters are the shared weights, or hold the parameter server's),
        the optimizer's state and the counters."""
        self.run.checkpoints.save({"model": self.model.state_dict(), "optimizer": optimizer_state,
                                   "totals": self.totals, "generation": self.generation}, self.totals["updates"])

    def finish(self, counters, times):
        """Final totals, and per worker: updates, env steps, CPU seconds, and when it made its first
        and last update (seconds since the start; overlapping periods show the workers ran together)."""
        self.totals = self._totals(counters)
        started = times[0] > 0
        span = times[1][started].max() - times[0][started].min() if started.any() else 0.0
        self.worker_stats = {
            "a3c/worker_updates": counters[1].tolist(), "a3c/worker_env_steps": counters[0].tolist(),
            "a3c/worker_cpu_s": times[2].tolist(),
            "a3c/worker_first_update_s": [float(t - self.start) if t else None for t in times[0]],
            "a3c/worker_last_update_s": [float(t - self.start) if t else None for t in times[1]],
            "a3c/env_steps_per_s": float(counters[0].sum() / span) if span > 0 else 0.0}
        self.bar.close()


def train(cfg, run):
    with one_blas_thread():
        return _train(cfg, run)


def _train(cfg, run):
    args = OmegaConf.to_object(cfg.agent)
    if run.device != "cpu":
        raise ConfigError(f"A3C runs its workers on the CPU; got device={run.device!r} (use device=cpu)")
    core.manual_seed(cfg.seed)
    # the spaces, and a clear error now for an env A3C cannot act in
    probe = make_envs(cfg.env, 1, cfg.seed, vectorization=worker_vectorization(cfg, args))
    model = build_model(args, probe.single_observation_space, probe.single_action_space, "A3C",
                        core.Generator(derive_seed(cfg.seed, "init")))
    probe.close()
    state = run.resume_state
    if state is not None:
        model.load_state_dict(state["model"])
    monitor = Monitor(cfg, args, run, state, model)
    if not budget_spent(0, 0, monitor.remaining):  # else a finished run: only the evaluation is left
        backend = _run_ray if args.backend == "ray" else _run_processes
        monitor.checkpoint(backend(cfg, args, run, model, state, monitor))
    totals = monitor.totals
    metrics = {"train/env_steps": totals["env_steps"], "train/episodes": totals["episodes"],
               "train/updates": totals["updates"], "time/wall_s": totals["wall_s"], **monitor.worker_stats}
    if run.should_stop():
        return metrics
    metrics.update(evaluation_metrics(model, evaluation_envs(cfg, args, "cpu"), cfg, args, "cpu"))
    run.logger.scalars({k: v for k, v in metrics.items() if k.startswith("eval/")}, totals["env_steps"])
    return metrics
