"""Worker processes and Ray instances for asynchronous trainers (A3C), whatever the workers compute.

    pool = ProcessWorkers("spawn", num_workers, "A3C worker")
    optimizer.share_memory_(pool.ctx)                  # what the workers share, made with the pool's context
    pool.start(loop, (spec, optimizer), own_sessions=False)
    while not pool.done():
        events = pool.poll(wait=0.1)                   # raises when a worker failed
        ... pool.views["counters"] ...
    pool.check(pool.stop())                            # stopped and joined; raises what they reported meanwhile

Each worker process runs `loop(rank, views, running, events, *args)`: `views` are numpy views of the
shared counters (`SharedCounters`), `running()` turns False when the trainer raises the stop flag or
dies, and `events` is a queue for ("kind", rank, payload) reports. Workers ignore Ctrl-C: the first
Ctrl-C (or SIGTERM) reaches the trainer, which raises the stop flag and waits for the workers to
finish their update; a second Ctrl-C exits at once, and the workers, seeing their parent gone (Linux
parent-death signal, and the parent-pid check of `running()`), exit too. A worker that raises sends
its traceback, and `poll` (or `check`) raises it in the trainer (NonFiniteError for a FloatingPointError, else
WorkerError); a worker that dies silently (killed) is reported with its exit code.
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
from pathlib import Path

import numpy as np

from core.runtime.errors import ConfigError, NonFiniteError

REPO_ROOT = Path(__file__).resolve().parents[1]


class WorkerError(RuntimeError):
    """A worker failed; the message holds its traceback (or its exit code)."""


def max_workers():
    """The most workers a run may start: 4 per CPU (more only adds contention)."""
    return 4 * (os.cpu_count() or 1)


class SharedCounters:
    """The RawArrays a trainer and its workers share: a stop flag, per worker its env steps, updates and
    episodes ("counters", 3 x N), and the time.time() of its first update's start, of its last update's
    end and the CPU seconds it used in between ("times", 3 x N). `views()` makes numpy views of them,
    again in each process (RawArrays pickle into the children, numpy views do not)."""

    def __init__(self, ctx, num_workers):
        self.raw = {"stop": ctx.RawArray(ctypes.c_int64, 1), "counters": ctx.RawArray(ctypes.c_int64, 3 * num_workers),
                    "times": ctx.RawArray(ctypes.c_double, 3 * num_workers)}
        self.num_workers = num_workers

    def views(self):
        return {name: np.ctypeslib.as_array(raw).reshape(-1 if name == "stop" else (3, self.num_workers))
                for name, raw in self.raw.items()}


def _die_with_parent():
    """Linux: have the kernel send SIGTERM to this process when its parent dies (no orphans even if
    the trainer is SIGKILLed); elsewhere the parent-pid check of `running()` does it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(loop, rank, shared, events, parent_pid, own_session, args):
    """A worker process: set up signals and the link to the parent, run `loop`, report how it ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's; it stops us through the flag
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker would inherit the trainer's handler
    if own_session:
        os.setsid()
    _die_with_parent()
    try:
        views = shared.views()
        loop(rank, views, lambda: not views["stop"][0] and os.getppid() == parent_pid, events, *args)
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


class ProcessWorkers:
    """`num_workers` worker processes of the multiprocessing start method `start_method` ("spawn":
    a fresh interpreter, safe whatever threads the parent runs; "fork" starts faster but copies a
    parent that may hold locks; "forkserver" is in between), with their SharedCounters (`views`);
    `label` names a worker in messages ("A3C worker 1 failed") and process names ("a3c-worker-1")."""

    def __init__(self, start_method, num_workers, label="worker"):
        self.label = label
        self.ctx = mp.get_context(start_method)
        self.shared = SharedCounters(self.ctx, num_workers)
        self.views = self.shared.views()
        self.events = self.ctx.Queue()
        self.processes = []

    def start(self, loop, args, own_sessions=False):
        """Start the workers, each running `loop(rank, views, running, events, *args)`; with
        `own_sessions` each starts a session of its own (setsid)."""
        name = self.label.lower().replace(" ", "-")
        self.processes = [self.ctx.Process(target=_worker_main, name=f"{name}-{rank}", daemon=True,
                                           args=(loop, rank, self.shared, self.events, os.getpid(), own_sessions, args))
                          for rank in range(self.shared.num_workers)]
        with _worker_start_conditions():
            for p in self.processes:
                p.start()

    def poll(self, wait):
        """The events reported since the last call (waiting up to `wait` seconds for the first);
        raises when a worker failed or died."""
        events = self._drain(wait)
        dead = [(rank, p.exitcode) for rank, p in enumerate(self.processes) if p.exitcode not in (None, 0)]
        if dead and not any(kind == "error" for kind, _, _ in events):
            events += self._drain(0.5)  # its traceback may still be on the way
        self.check(events)
        if dead:
            raise WorkerError("; ".join(f"{self.label} {rank} died with exit code {code}"
                                        + (f" (signal {signal.Signals(-code).name})" if code < 0 else "")
                                        for rank, code in dead))
        return events

    def check(self, events):
        """Raise the first failure reported among `events`: NonFiniteError for a FloatingPointError
        (a worker's loss went NaN or inf), else WorkerError; both hold the worker's traceback."""
        for _, rank, (error_type, trace) in (event for event in events if event[0] == "error"):
            error = NonFiniteError if error_type == "FloatingPointError" else WorkerError
            raise error(f"{self.label} {rank} failed:\n{trace}")

    def done(self):
        """Whether every worker has finished its loop."""
        return all(p.exitcode == 0 for p in self.processes)

    def stop(self, timeout=15.0):
        """Raise the stop flag, wait for every worker to finish its update and exit (still reading the
        event queue, so none blocks writing to it), then terminate and finally kill stragglers.
        Returns the events read meanwhile."""
        self.views["stop"][0] = 1
        events = []
        deadline = time.time() + timeout
        while any(p.is_alive() for p in self.processes) and time.time() < deadline:
            events += self._drain(0.05)
        for p in self.processes:
            if p.is_alive():
                p.terminate()
        for p in self.processes:
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join()
        return events + self._drain(0.0)

    def _drain(self, wait):
        """Every queued event; waits up to `wait` seconds for the first."""
        events = []
        try:
            events.append(self.events.get(timeout=wait) if wait else self.events.get_nowait())
            while True:
                events.append(self.events.get_nowait())
        except queue.Empty:
            return events


def connect_ray(address, num_workers, extra):
    """Import Ray and join the instance at `address` ("auto", "host:port") or start a local one (None);
    ConfigError with what to do when that fails (`extra`: how to install Ray)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"agent.backend=ray needs Ray, which is not installed: {extra}") from None
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
