"""The training loop's skeleton, the same for every trainer: counters in the unit the trainer
declares, the progress bar, checkpoint and evaluation cadence, resume of everything the trainer
tracks, the non-finite guard and the final metrics. A trainer keeps only its algorithm:

    session = run.session("ppo", unit="env_steps", total=args.total_timesteps,
                          episodes=args.total_episodes, eval_every=args.eval_every, evaluate=evaluate)
    session.track(model=model, optimizer=optimizer, stepper=stepper, ...)   # restored when resuming
    while session.running():                      # budget, episode budget, target return, Ctrl-C
        ... collect, learn ...
        session.check_finite("losses/loss", loss)
        session.log({"losses/loss": loss})        # TensorBoard scalars at the current progress
        session.advance(rollout_size, episodes=finished)   # (return, length) pairs; then the cadences
    return session.finish()                       # last checkpoint, final evaluation, counters

`checkpoint_every`, `eval_every` and `console_every` count in the session's unit (agents: env steps;
generative and supervised models: epochs; tabular methods: iterations); `eval_every=None` means
about EVALUATIONS evaluations over the budget and `console_every=None` about CONSOLE_LINES lines
(every FALLBACK_EVERY units when the budget is in episodes only); 0 turns either off. A checkpoint
holds every tracked object's state, the global random streams, the counters and `session.extra`
(plain values the trainer wants carried over), so a resumed run continues bitwise as the
uninterrupted one.

Evaluation (`evaluate`, a function returning eval/* metrics) runs with the global random streams
put back afterwards, so a run evaluated while training trains exactly as one that is not. An
evaluation whose eval/return_mean beats every earlier one of the run (resumed parts included)
writes `checkpoints/best.ckpt`: the tracked objects as the evaluation saw them (`evaluated` names
copies the trainer evaluates instead of a tracked object, as A3C's snapshot of the shared weights),
without those named in `not_in_best` (a replay buffer, which evaluation does not need). `record`,
a function from such a state to (frames, fps), films every evaluation into
`videos/eval-<step>.gif` and TensorBoard's `eval/video`.

The console line (`status_line()`, printed every `console_every` units unless quiet): progress,
units per second (SPS for env steps), the mean return and length over the last RECENT_EPISODES
episodes the trainer reported (`advance(n, episodes=[(return, length), ...])`), the newest logged
losses (`losses/*loss*`) and the newest evaluation with the best so far.

Update steps inside a unit: a trainer whose unit is coarse (an epoch of batches) passes
`steps_per_unit` and calls `session.step()` after each update. The budget and the cadences stay in
the unit; the bar, the TensorBoard x-axis, the checkpoint file numbers and the non-finite messages
count steps (`session.global_step`), and a run stopped inside a unit is checkpointed where it stopped
(the trainer tracks its place in the unit, e.g. in `extra`; gans/common.py's Batches does):

    session = run.session("vae", "epochs", epochs, steps_per_unit=batches_per_epoch)
    session.track(model=model, optimizer=optimizer, data=batches)
    while session.running():
        for index in batches:                     # the rest of this epoch; ends early when stopped
            ... one update ...
            session.step()
            session.log({"losses/loss": loss})    # at session.global_step
        if the epoch was completed: session.advance(1)   # else finish() saves the place reached

Tracked objects: anything with `state_dict`/`load_state_dict` (modules, optimizers, schedulers,
envs steppers, buffers), core Generators (`get_state`/`set_state`), numpy Generators, and plain
dicts (an algorithm's own counters, computed tables), saved as they are and restored in place.

`total=None` means no budget in the unit: the episode budget (`episodes`, then required) ends the
run, and the progress bar counts episodes.
"""
import collections
import math
import time

import numpy as np

from core.runtime.errors import ConfigError
from core.runtime.rng import get_rng_state, set_rng_state

EVALUATIONS = 10          # eval_every=None: about this many evaluations in the budget (SB3: every 10k of 100k steps)
CONSOLE_LINES = 10        # console_every=None: about this many console lines in the budget
FALLBACK_EVERY = 10_000   # either, without a budget in the unit (SB3's EvalCallback evaluates every 10k steps)
RECENT_EPISODES = 100     # the console line's episode means (SB3's ep_rew_mean)


class Session:
    def __init__(self, run, name, unit, total, checkpoint_every=None, checkpoint_default=0, eval_every=0,
                 evaluate=None, episodes=None, target=None, steps_per_unit=None, console_every=0, record=None,
                 evaluated=None, not_in_best=()):
        if total is None and episodes is None:
            raise ValueError(f"session {name!r} needs a budget: total ({unit}) or episodes")
        self.run, self.name, self.unit = run, name, unit
        self.total = math.inf if total is None else total
        self._bar_counts_episodes = total is None
        self.steps_per_unit = steps_per_unit  # None: the trainer counts no steps inside a unit
        # the run's checkpoint_every (None: the trainer's default); 0: only at the end and on Ctrl-C
        self.checkpoint_every = checkpoint_default if checkpoint_every is None else checkpoint_every
        self.eval_every = self._cadence(eval_every, EVALUATIONS)
        self.console_every = self._cadence(console_every, CONSOLE_LINES)
        self.evaluate_fn = evaluate
        self.record = record
        self.evaluated = evaluated or {}
        self.not_in_best = set(not_in_best)
        self.best = None  # {"value": the best eval/return_mean so far, "progress": where}: best.ckpt's policy
        self.recent = collections.deque(maxlen=RECENT_EPISODES)  # (return, length) of the last episodes
        self.episode_budget = math.inf if episodes is None else episodes
        self.target = target  # stop at the first evaluation whose eval/return_mean reaches it
        self.progress = self.episodes = self.iterations = self.steps = 0
        self.extra = {}
        self.evaluation = None  # (progress, metrics) of the newest evaluation
        self.to_target = None  # (wall seconds, progress) when the target was reached
        self._objects = {}
        self._saved_at = None
        self._wall_before = 0.0
        self._start = time.perf_counter()
        self._start_progress = 0
        self._bar = None

    def _cadence(self, every, per_budget):
        if every is None:
            return FALLBACK_EVERY if math.isinf(self.total) else max(1, math.ceil(self.total / per_budget))
        return every

    # ----- what a checkpoint holds -----
    def track(self, **objects):
        """Register the objects whose state makes up a checkpoint; when resuming, restore them now
        (and the counters, random streams and `extra`)."""
        self._objects.update(objects)
        if self.run.resume_state is not None:
            self._restore(self.run.resume_state)
        self._start, self._start_progress = time.perf_counter(), self.progress
        if self._bar_counts_episodes:
            self._bar = self.run.logger.progress(self.episode_budget, self.name)
        elif self.steps_per_unit is not None:
            self._bar = self.run.logger.progress(self.total * self.steps_per_unit, self.name)
        else:
            self._bar = self.run.logger.progress(self.total, self.name)
        self._update_bar()

    def state_dict(self):
        """The checkpoint: each tracked object's state under its name (as a PyTorch user would save
        them), and the session's own under "session"."""
        return {**{name: _state_of(obj) for name, obj in self._objects.items()}, "session": self._own_state()}

    def _own_state(self):
        return {"name": self.name, "unit": self.unit, "progress": self.progress, "episodes": self.episodes,
                "iterations": self.iterations, "steps": self.steps, "extra": self.extra, "rng": get_rng_state(),
                "wall_s": self.wall(), "to_target": self.to_target, "evaluation": self.evaluation,
                "best": self.best, "recent": list(self.recent)}

    def evaluated_state(self):
        """best.ckpt's state: the tracked objects as the evaluation saw them, less `not_in_best`."""
        return {**{name: _state_of(self.evaluated.get(name, obj)) for name, obj in self._objects.items()
                   if name not in self.not_in_best}, "session": self._own_state()}

    def _restore(self, state):
        where = self.run.resume_path
        saved = state.get("session") or {}
        if saved.get("name") != self.name:
            raise ConfigError(f"{where} is a checkpoint of {saved.get('name') or 'another trainer'}, not of "
                              f"{self.name}; resume it with its own trainer or start a new run")
        fresh_lrs = {name: _learning_rates(obj) for name, obj in self._objects.items()}
        for name, obj in self._objects.items():
            if name not in state:
                raise ConfigError(f"{where} holds no {name!r}; it was saved with other settings: start a new run")
            try:
                _load_state(obj, state[name])
            except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
                raise ConfigError(f"{where} does not fit this run's {name}: {str(e).splitlines()[0]}") from None
        if any(_is_learning_rate(key) for key in self.run.resume_changes):
            for name, obj in self._objects.items():  # the new rates win over the restored ones
                _set_learning_rates(obj, fresh_lrs[name])
        self.progress, self.episodes, self.iterations = saved["progress"], saved["episodes"], saved["iterations"]
        self.steps = saved["steps"]
        self.extra = saved["extra"]
        set_rng_state(saved["rng"])
        self._wall_before = saved["wall_s"]
        self.to_target, self.evaluation = saved["to_target"], saved["evaluation"]
        # best.ckpt may be newer than the checkpoint resumed (a final evaluation, a kill between checkpoints)
        bests = [best for best in (saved.get("best"), self.run.checkpoints.saved_best()) if best]
        self.best = max(bests, key=lambda best: best["value"], default=None)
        self.recent.extend(tuple(pair) for pair in saved.get("recent", ()))
        self._saved_at = self.global_step

    # ----- the loop -----
    def running(self):
        return (self.progress < self.total and self.episodes < self.episode_budget and self.to_target is None
                and not self.run.should_stop())

    def advance(self, amount, episodes=0, iterations=1):
        """Count `amount` units of work (and the episodes that ended in them: their number, or their
        (return, length) pairs, which also feed the console line; and the trainer's iterations: one
        per call, unless a trainer that polls work done elsewhere, as A3C's workers' updates, counts
        them itself), then evaluate, checkpoint and print the console line when their cadence is due."""
        before = self.progress
        if hasattr(episodes, "__len__"):
            self.record_episodes(episodes)
            episodes = len(episodes)
        self.progress += amount
        self.episodes += episodes
        self.iterations += iterations
        self._update_bar()
        if self._due(self.eval_every, before):
            self.evaluate()
        if self._due(self.checkpoint_every, before):
            self.checkpoint()
        if self._due(self.console_every, before) and not self.run.quiet:
            self.console(self.status_line())

    def _due(self, every, before):
        return every and self.progress // every > before // every

    def record_episodes(self, episodes):
        """Note (return, length) of episodes that ended, for the console line's recent means."""
        self.recent.extend((float(ret), int(length)) for ret, length in episodes)

    def step(self):
        """Count one update step inside the current unit (see the module docstring)."""
        self.steps += 1
        self._bar.update(1)

    @property
    def global_step(self):
        """Where the run stands for logs and checkpoints: the update steps when the trainer counts
        them, else the progress in the unit."""
        return self.progress if self.steps_per_unit is None else self.steps

    def _update_bar(self):
        if self.steps_per_unit is not None:
            done = self.steps
        else:
            done = self.episodes if self._bar_counts_episodes else self.progress
        self._bar.update(min(done, self._bar.total) - self._bar.n)

    def wall(self):
        """Training seconds so far, over every resumed part of the run."""
        return self._wall_before + time.perf_counter() - self._start

    def sps(self):
        """Units per second since this process started (CleanRL's charts/SPS for env steps)."""
        return (self.progress - self._start_progress) / max(time.perf_counter() - self._start, 1e-9)

    # ----- logging -----
    def log(self, values, step=None):
        """TensorBoard scalars at `step` (default: `global_step`)."""
        self.run.logger.scalars(values, self.global_step if step is None else step)

    def show(self, **values):
        """Live values beside the progress bar."""
        self._bar.set_postfix(values)

    def console(self, line):
        """A line for the user above the progress bar, unless quiet (see RunLogger.console)."""
        self.run.logger.console(line)

    def status_line(self):
        """Where the run stands, in one line (see the module docstring), e.g.
        `ppo env_steps 20480/100000  SPS 3120  episodes 310  ep_rew_mean 61.2  ep_len_mean 61.2
        policy_loss -0.0113  value_loss 21.4  eval 95.3 (best 120)`."""
        done = self.progress if math.isinf(self.total) else f"{self.progress}/{self.total}"
        rate = "SPS" if self.unit == "env_steps" else f"{self.unit}/s"
        parts = [f"{self.name} {self.unit} {done}", f"{rate} {self.sps():.4g}"]
        if self.episodes:
            budget = "" if math.isinf(self.episode_budget) else f"/{self.episode_budget}"
            parts.append(f"episodes {self.episodes}{budget}")
        if self.recent:
            returns, lengths = zip(*self.recent)
            parts.append(f"ep_rew_mean {np.mean(returns):.4g}  ep_len_mean {np.mean(lengths):.4g}")
        latest = self.run.logger.latest
        parts += [f"{tag[7:]} {value:.4g}" for tag, value in latest.items()
                  if tag.startswith("losses/") and "loss" in tag[7:]]
        evaluated = self.evaluation[1].get("eval/return_mean") if self.evaluation else None
        if evaluated is not None and self.best:
            parts.append(f"eval {evaluated:.4g} (best {self.best['value']:.4g})")
        return "  ".join(parts)

    def check_finite(self, name, value):
        """NonFiniteError (training stops, the last good checkpoint stays) when `value` is NaN/inf.
        A finite Python float passes without an array conversion (DQN checks every update)."""
        if not (isinstance(value, float) and math.isfinite(value)):
            self.run.check_finite(name, value, self.global_step)

    # ----- evaluation and checkpoints -----
    def evaluate(self):
        """Run the trainer's evaluation now, log its eval/* scalars, keep best.ckpt, film it (with
        `record`) and check the target. The global random streams are as before afterwards."""
        streams = get_rng_state()
        metrics = self.evaluate_fn()
        self.evaluation = (self.progress, metrics)
        self.log({k: v for k, v in metrics.items() if k.startswith("eval/") and k != "eval/episodes"})
        value = metrics.get("eval/return_mean")
        better = value is not None and (self.best is None or value > self.best["value"])
        if better:
            self.best = {"value": float(value), "progress": self.progress}
        if better or self.record:
            state = self.evaluated_state()
            if better:
                self.run.checkpoints.save_best(state, self.global_step)
            if self.record:
                frames, fps = self.record(state)
                self.run.logger.video("eval/video", frames, self.global_step, fps=fps,
                                      path=self.run.dir / "videos" / f"eval-{self.global_step}.gif")
        set_rng_state(streams)
        if self.target is not None and value is not None and value >= self.target:
            self.to_target = (self.wall(), self.progress)
        return metrics

    def checkpoint(self):
        self.run.checkpoints.save(self.state_dict(), self.global_step)
        self._saved_at = self.global_step

    def finish(self, metrics=None):
        """Close the bar, write the last checkpoint and return the final metrics: the trainer's
        `metrics`, the counters, the wall time and (unless stopped early) the final evaluation,
        reused when the newest one saw this very policy."""
        self._bar.close()
        if self._saved_at != self.global_step:
            self.checkpoint()
        result = {f"train/{self.unit}": self.progress, "train/iterations": self.iterations}
        if self.unit == "env_steps" or self.episodes:  # trainers of epochs or steps have no episodes
            result["train/episodes"] = self.episodes
        if self.steps_per_unit is not None:
            result["train/steps"] = self.steps
        result.update({**(metrics or {}), "time/wall_s": self.wall()})
        if self.to_target is not None:
            result.update({"time/to_target_s": self.to_target[0], "train/to_target_steps": self.to_target[1]})
        if self.evaluate_fn is None or self.run.should_stop():
            return result
        final = self.evaluation[1] if self.evaluation and self.evaluation[0] == self.progress else self.evaluate()
        return {**result, **final}


def _state_of(obj):
    if isinstance(obj, dict):
        return dict(obj)
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    if hasattr(obj, "get_state"):
        return obj.get_state()
    if isinstance(obj, np.random.Generator):
        return obj.bit_generator.state
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}: it has no state_dict/get_state")


def _load_state(obj, state):
    if isinstance(obj, dict):  # in place: the trainer holds this very dict
        obj.clear()
        obj.update(state)
    elif hasattr(obj, "load_state_dict"):
        obj.load_state_dict(state)
    elif hasattr(obj, "set_state"):
        obj.set_state(state)
    else:
        obj.bit_generator.state = state


def _is_learning_rate(key):
    name = key.rsplit(".", 1)[-1]
    return name == "lr" or name.startswith("lr_") or name.endswith("_lr")


def _learning_rates(obj):
    """The per-group learning rates of an optimizer, or a scheduler's base rates (else None)."""
    if hasattr(obj, "param_groups"):
        return [group["lr"] for group in obj.param_groups]
    if hasattr(obj, "base_lrs"):
        return list(obj.base_lrs)
    return None


def _set_learning_rates(obj, rates):
    if rates is None:
        return
    if hasattr(obj, "param_groups"):
        for group, lr in zip(obj.param_groups, rates):
            group["lr"] = lr
            if "initial_lr" in group:
                group["initial_lr"] = lr
    else:  # a schedule: new base rates, and the optimizer's rates where the schedule now puts them
        obj.base_lrs = list(rates)
        obj.step(obj.last_epoch)
