"""A3C's workers (agents/a3c.py is the trainer): the update they make, what one worker computes, and
the two backends that run them, as the trainer drives them (`BACKENDS[args.backend](args, model,
optimizer, spec)`: `poll()` -> (counters, times, events), `done()`, `finish()`, `close()`):

- ProcessBackend: worker processes (agents/workers.py starts, watches and stops them) over the
  trainer's optimizer moved into shared memory: Hogwild! updates of the shared weights;
- RayBackend: Ray actors pushing their gradients to a parameter-server actor.

counters are (3, num_workers) arrays of each worker's env steps, updates and episodes; times
(3, num_workers) its first update's start and last update's end (time.time()) and its CPU seconds;
events ("episode", rank, (return, length)) and ("losses", rank, {part: mean}) reports.
"""
import math
import time

import numpy as np
from omegaconf import OmegaConf

import core
from agents.a2c import a2c_loss
from agents import derive_seed, one_blas_thread
from agents.actor_critic import build_model, lr_schedule, make_envs
from agents.rollout import RolloutBuffer, collect_rollout, n_step_returns
from agents.workers import ProcessWorkers, WorkerError, connect_ray
from core import nn, optim
from core.backend import to_device
from core.tensor import Tensor
from envs import VectorStepper

RAY_EXTRA = "pip install 'rlgen-lab[ray]'"


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
    `gradient(weights)` plays one n-step rollout with those weights and returns its loss gradient.

    The model copy, the rollout and the backward pass live on the run's device; the shared weights
    and the optimizer stay in host memory, so each update copies the weights to the device and the
    gradients back (on a GPU: the workers' forward and backward passes run there, Hogwild! on the host)."""

    def __init__(self, rank, spec):
        self.rank, self.args, self.device = rank, spec["agent"], spec.get("device", "cpu")
        env_cfg = OmegaConf.create(spec["env"])
        seed = derive_seed(spec["seed"], "worker", rank, spec["generation"])
        self.envs = make_envs(env_cfg, self.args.envs_per_worker, seed % 2**31)
        self.model = build_model(self.args, self.envs.single_observation_space, self.envs.single_action_space,
                                 "A3C").to(self.device)
        self.params = list(self.model.parameters())
        self.generator = core.Generator(derive_seed(seed, "actions"))
        self.stepper = VectorStepper(self.envs)
        self.stepper.reset(seed=seed % 2**31)
        self.buffer = RolloutBuffer(self.args.num_steps, self.envs, self.device)

    def gradient(self, weights):
        """(gradients, env steps, finished episodes, {loss part: float}) of one rollout played with
        `weights` (arrays in the order of the model's parameters: the current shared ones); the
        gradients are arrays (None where a parameter got none), clipped to global norm max_grad_norm."""
        for p, w in zip(self.params, weights):
            p.data[...] = to_device(w, self.device)  # pull the current shared weights into the local copy
        finished = collect_rollout(self.stepper, self.model, self.buffer, self.generator, self.device)
        buffer, args = self.buffer, self.args
        returns = n_step_returns(buffer.rewards, buffer.next_values, buffer.terminated, buffer.truncated, args.gamma)
        loss, parts = a2c_loss(self.model, buffer, returns - buffer.values, returns, args)
        if not math.isfinite(float(loss.data)):
            raise FloatingPointError(f"A3C worker {self.rank}: the loss is {float(loss.data)}; lower agent.lr or "
                                     "agent.max_grad_norm")
        self.model.zero_grad()
        loss.backward()
        if args.max_grad_norm:
            optim.clip_grad_norm_(self.params, args.max_grad_norm)
        grads = [None if p.grad is None else to_device(p.grad.data, "cpu") for p in self.params]
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
    env = {**OmegaConf.to_container(cfg.env, enum_to_str=True), "vectorization": worker_vectorization(cfg, args)}
    return {"env": env, "agent": args, "seed": cfg.seed, "generation": generation, "budget": budget,
            "device": cfg.device}


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
def _process_worker(rank, views, running, events, spec, optimizer):
    """A worker process's loop (agents/workers.py runs it); `optimizer` is the trainer's, in shared memory."""
    args = spec["agent"]
    worker = Worker(rank, spec)
    weights = [p.data for group in optimizer.param_groups for p in group["params"]]  # the shared ones
    scheduler = lr_schedule(optimizer, args.anneal_lr, args.total_timesteps)
    steps_before = args.total_timesteps - spec["budget"][0]  # by earlier runs of a resumed training
    counters, times = views["counters"], views["times"]
    losses, last_report = LossMeter(), time.time()
    with one_blas_thread():  # one per worker: the workers are the parallelism
        while running():
            started, cpu = time.time(), time.process_time()
            grads, steps, finished, parts = worker.gradient(weights)
            # Hogwild!: straight into the shared weights, no lock
            apply_gradient(optimizer, scheduler, grads, steps_before + int(counters[0].sum()))
            ended = time.time()
            if times[0, rank] == 0:
                times[0, rank], cpu_start = started, cpu
            times[1:, rank] = ended, time.process_time() - cpu_start
            counters[:, rank] += (steps, 1, len(finished))
            losses.add(parts)
            for episode in finished:
                events.put(("episode", rank, (episode.episodic_return, episode.length)))
            if ended - last_report >= args.log_every_s:
                events.put(("losses", rank, losses.pop()))
                last_report = ended
            if budget_spent(counters[0].sum(), counters[2].sum(), spec["budget"]):
                views["stop"][0] = 1


class ProcessBackend:
    """The processes backend as the trainer drives it: `poll` -> (counters, times, events), `done`,
    `finish` (stop and join the workers, then the last poll), `close`."""

    def __init__(self, args, model, optimizer, spec):
        self.pool = ProcessWorkers(args.start_method, args.num_workers, "A3C worker")
        optimizer.share_memory_(self.pool.ctx)  # the model's parameters are views of the shared weights from here on
        self.pool.start(_process_worker, (spec, optimizer), args.own_sessions)

    def poll(self, wait=0.1):
        events = self.pool.poll(wait)
        return self.pool.views["counters"], self.pool.views["times"], events

    def done(self):
        return self.pool.done()

    def finish(self):
        events = self.pool.stop()
        self.pool.check(events)
        return self.pool.views["counters"], self.pool.views["times"], events

    def close(self):
        self.pool.stop()


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


class RayBackend:
    """The Ray backend as the trainer drives it (as `ProcessBackend`); each poll also copies the server's
    weights and optimizer state into the trainer's model and optimizer, which checkpoints and
    evaluations read."""

    def __init__(self, args, model, optimizer, spec):
        self.ray = ray = connect_ray(args.ray_address, args.num_workers, RAY_EXTRA)
        self.params, self.optimizer, self.workers = list(model.parameters()), optimizer, []
        try:
            self.server = ray.remote(num_cpus=0)(ParameterServer).remote(
                args, [p.data for p in self.params], args.num_workers, spec["budget"], optimizer.state_dict())
            self.workers = [ray.remote(num_cpus=1)(RayWorker).remote(rank, spec) for rank in range(args.num_workers)]
            self.pending = [w.run.remote(self.server) for w in self.workers]
        except BaseException:
            self.close()
            raise

    def poll(self, wait=0.2):
        ray = self.ray
        try:
            if self.pending:
                finished, self.pending = ray.wait(self.pending, num_returns=len(self.pending), timeout=wait)
                ray.get(finished)  # a failed worker raises here, with its traceback
            progress, (weights, state) = ray.get([self.server.progress.remote(), self.server.state_dict.remote()])
        except ray.exceptions.RayError as e:
            raise WorkerError(f"an A3C Ray worker failed:\n{e}") from None
        for p, w in zip(self.params, weights):
            p.data[...] = w
        self.optimizer.load_state_dict(state)
        return progress

    def done(self):
        return not self.pending

    def finish(self):
        try:
            self.ray.get(self.server.request_stop.remote())
            self.ray.get(self.pending)
        except self.ray.exceptions.RayError as e:
            raise WorkerError(f"an A3C Ray worker failed:\n{e}") from None
        self.pending = []
        return self.poll()

    def close(self):
        for w in self.workers:
            self.ray.kill(w)
        self.ray.shutdown()


BACKENDS = {"processes": ProcessBackend, "ray": RayBackend}
