"""Checkpoints of a whole training run: model, Adam, a learning-rate schedule and a random generator in
one file. A run restored into fresh objects continues bitwise identically to an uninterrupted one; a
truncated or corrupted file raises and leaves the fresh objects untouched."""
import numpy as np
import pytest

import core
import core.functional as F
from core import nn, optim
from core.optim import lr_scheduler

DATA = np.random.default_rng(123).standard_normal((64, 4)).astype(np.float32)
TARGET = np.sin(DATA[:, :2] * 2).astype(np.float32)


class Run:
    """A small regression run whose every source of randomness is one Generator: minibatches and dropout."""

    def __init__(self, seed):
        self.gen = core.Generator(seed)
        self.model = nn.Sequential(nn.Linear(4, 16, generator=self.gen), nn.ReLU(),
                                   nn.Dropout(0.2, generator=self.gen), nn.Linear(16, 2, generator=self.gen))
        self.opt = optim.Adam(self.model.parameters(), lr=1e-2, amsgrad=True)
        self.sched = lr_scheduler.StepLR(self.opt, step_size=3, gamma=0.5)
        self.step = 0

    def train(self, n):
        losses = []
        for _ in range(n):
            idx = self.gen.integers(0, len(DATA), (16,)).numpy()
            loss = F.mse_loss(self.model(core.tensor(DATA[idx])), core.tensor(TARGET[idx]))
            self.opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.sched.step()
            self.step += 1
            losses.append(loss.item())
        return losses

    def state(self):
        return {"model": self.model.state_dict(), "optim": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "generator": self.gen.get_state(), "step": self.step}

    def restore(self, path):
        state = core.load(path)  # the whole file is checked before any object is touched
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["generator"])
        self.step = state["step"]

    def fingerprint(self):
        """Bytes of everything that decides the future of the run."""
        params = b"".join(p.data.tobytes() for p in self.model.parameters())
        opt_state = b"".join(v.tobytes() for group in self.opt.state_dict()["state"] for v in group.values())
        return (params, opt_state, repr(self.opt.param_groups[0]["lr"]), repr(self.sched.state_dict()),
                repr(self.gen.get_state()), self.step)


def test_resumed_run_is_bitwise_identical(tmp_path):
    path = tmp_path / "run.ckpt"
    reference = Run(seed=0)
    first = reference.train(5)
    core.save(reference.state(), path)
    rest = reference.train(7)

    fresh = Run(seed=99)  # different initial weights, generator and nothing trained
    fresh.restore(path)
    assert fresh.step == 5
    resumed = fresh.train(7)
    assert resumed == rest  # float equality: the same computation, bit for bit
    assert fresh.fingerprint() == reference.fingerprint()
    assert first != rest[:5]


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "foreign"])
def test_damaged_checkpoint_raises_and_leaves_fresh_objects_untouched(tmp_path, damage):
    path = tmp_path / "run.ckpt"
    run = Run(seed=0)
    run.train(4)
    core.save(run.state(), path)
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip_byte":
        path.write_bytes(blob[:-40] + bytes([blob[-40] ^ 0xFF]) + blob[-39:])
    else:
        path.write_bytes(b"PK\x03\x04 a zip file, not a checkpoint" * 4)
    fresh = Run(seed=1)
    fresh.train(2)
    before = fresh.fingerprint()
    with pytest.raises(core.CheckpointError, match="truncated|corrupted|not a checkpoint"):
        fresh.restore(path)
    assert fresh.fingerprint() == before


def test_checkpoint_of_another_architecture_names_the_problem(tmp_path):
    path = tmp_path / "run.ckpt"
    run = Run(seed=0)
    run.train(2)
    core.save(run.state(), path)
    other = Run(seed=1)
    other.model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
    other.opt = optim.Adam(other.model.parameters(), lr=1e-2, amsgrad=True)
    before = other.fingerprint()
    with pytest.raises(RuntimeError, match=r"0\.weight \(checkpoint \(16, 4\), model \(8, 4\)\)"):
        other.restore(path)
    assert other.fingerprint() == before
    state = core.load(path)
    with pytest.raises(ValueError, match="shapes"):  # the optimizer alone refuses too, and changes nothing
        other.opt.load_state_dict(state["optim"])
    assert other.fingerprint() == before
